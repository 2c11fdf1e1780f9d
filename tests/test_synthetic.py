"""The embedded synthetic dataset: determinism, duplicates, object classes, specific captions, shards."""

from __future__ import annotations

import io
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from dftrain.synthetic import (
    OBJECT_CLASS_NAMES,
    plan_duplicate_groups,
    synthetic_object_samples,
    synthetic_train_samples,
    write_synthetic,
)


def _decode(jpg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"), dtype=np.float32)


@pytest.fixture(scope="module")
def train_samples():
    return list(synthetic_train_samples(200, 64, 0.1, seed=3))


def test_same_seed_same_bytes_different_seed_differs(train_samples):
    again = list(synthetic_train_samples(200, 64, 0.1, seed=3))
    assert [s["jpg"] for s in again] == [s["jpg"] for s in train_samples]
    assert [s["txt"] for s in again] == [s["txt"] for s in train_samples]
    other = list(synthetic_train_samples(200, 64, 0.1, seed=4))
    shared = {s["jpg"] for s in other} & {s["jpg"] for s in train_samples}
    assert not shared
    assert [s["txt"] for s in other] != [s["txt"] for s in train_samples]
    objects_a = [s["jpg"] for s in synthetic_object_samples(2, 48, seed=1)]
    objects_b = [s["jpg"] for s in synthetic_object_samples(2, 48, seed=1)]
    objects_c = [s["jpg"] for s in synthetic_object_samples(2, 48, seed=2)]
    assert objects_a == objects_b and objects_a != objects_c


def test_samples_are_writer_ready(train_samples):
    keys = [s["__key__"] for s in train_samples]
    assert len(set(keys)) == len(keys) == 200
    for sample in train_samples[:20]:
        assert sample["jpg"][:2] == b"\xff\xd8"  # JPEG magic
        assert Image.open(io.BytesIO(sample["jpg"])).size == (64, 64)
        meta = sample["json"]
        assert meta["key"] == sample["__key__"] and meta["caption"] == sample["txt"]
        assert (meta["width"], meta["height"], meta["source"]) == (64, 64, "synthetic")
        assert isinstance(meta["group"], int)


def test_duplicates_at_the_requested_fraction(train_samples):
    sizes = Counter(s["json"]["group"] for s in train_samples)
    duplicated = [g for g, count in sizes.items() if count > 1]
    assert sum(sizes.values()) == 200
    assert abs(len(duplicated) / len(sizes) - 0.1) < 0.02
    assert all(2 <= sizes[g] <= 6 for g in duplicated)
    # Copies in a group are the same picture (identical or near-identical pixels) ...
    by_group: dict[int, list[np.ndarray]] = {}
    for s in train_samples:
        if s["json"]["group"] in duplicated:
            by_group.setdefault(s["json"]["group"], []).append(_decode(s["jpg"]))
    for images in by_group.values():
        for image in images[1:]:
            assert np.abs(image - images[0]).mean() < 8
    # ... and distinct groups are really distinct images.
    firsts = {}
    for s in train_samples:
        firsts.setdefault(s["json"]["group"], _decode(s["jpg"]))
    groups = list(firsts.values())[:40]
    distances = [np.abs(a - b).mean() for i, a in enumerate(groups) for b in groups[i + 1 :]]
    assert min(distances) > 8


def test_no_duplicates_when_fraction_zero():
    plan = plan_duplicate_groups(150, 0.0, seed=0)
    assert plan == [1] * 150
    for n in (1, 7, 50, 333):
        for fraction in (0.0, 0.1, 0.3):
            assert sum(plan_duplicate_groups(n, fraction, seed=1)) == n


def test_captions_are_specific(train_samples):
    captions = [s["txt"] for s in train_samples]
    assert len(set(captions)) > 0.8 * len(captions)
    with_numbers = sum(bool(re.search(r"\d", c)) for c in captions)
    with_codes = sum(bool(re.search(r"\b[A-Za-z]{2,3}-\d{3,4}\b", c)) for c in captions)
    assert with_numbers == len(captions)  # sizes, prices, years, codes
    assert with_codes > 0.5 * len(captions)
    colour_words = {"red", "orange", "yellow", "green", "lime", "teal", "cyan", "blue", "navy", "purple",
                    "magenta", "pink", "brown", "maroon", "olive", "gold", "black", "white", "grey"}
    assert all(colour_words & set(re.findall(r"[a-z]+", c.lower())) for c in captions)


def test_object_bank_has_ten_or_more_named_classes():
    samples = list(synthetic_object_samples(3, 64, seed=0))
    assert len(OBJECT_CLASS_NAMES) >= 10
    assert len(samples) == 3 * len(OBJECT_CLASS_NAMES)
    classes = Counter(s["json"]["class_name"] for s in samples)
    assert set(classes) == set(OBJECT_CLASS_NAMES) and set(classes.values()) == {3}
    for s in samples:
        assert s["cls"] == str(s["json"]["class_id"])
        assert OBJECT_CLASS_NAMES[s["json"]["class_id"]] == s["json"]["class_name"]
    from dftrain.synthetic.objects import OBJECT_CLASS_SYNONYMS

    assert list(OBJECT_CLASS_SYNONYMS) == OBJECT_CLASS_NAMES  # every class its names, the name first
    assert all(names[0] == name and len(set(names)) == len(names) for name, names in OBJECT_CLASS_SYNONYMS.items())
    for s in samples:  # words.txt's synonyms, in `dftrain shard objects`' form
        names = OBJECT_CLASS_SYNONYMS[s["json"]["class_name"]]
        assert s["json"].get("class_synonyms") == (list(names) if len(names) > 1 else None)
    # Instances of a class vary (pose, colour, background).
    apples = [_decode(s["jpg"]) for s in samples if s["json"]["class_name"] == "apple"]
    assert np.abs(apples[0] - apples[1]).mean() > 5


def test_write_synthetic_shards_and_is_idempotent(tmp_path):
    from dftrain.shards import Manifest, iter_samples

    paths = write_synthetic(tmp_path / "syn", n=40, size=32, dup_fraction=0.1, seed=0,
                            samples_per_shard=16, objects_per_class=2)
    train = Manifest.load(paths["train"])
    objects = Manifest.load(paths["objects"])
    assert (train.kind, train.total_samples, len(train.shards)) == ("train", 40, 3)
    assert (objects.kind, objects.total_samples) == ("objects", 2 * len(OBJECT_CLASS_NAMES))
    assert "dftrain shard synthetic" in train.command

    expected = {s["__key__"]: s for s in synthetic_train_samples(40, 32, 0.1, 0)}
    read = list(iter_samples(paths["train"]))
    assert {s["__key__"] for s in read} == set(expected)
    for s in read:
        assert s["jpg"] == expected[s["__key__"]]["jpg"] and s["txt"] == expected[s["__key__"]]["txt"]
        assert s["json"]["group"] == expected[s["__key__"]]["json"]["group"]
    read_objects = list(iter_samples(paths["objects"], require=("jpg", "cls")))
    assert {s["cls"] for s in read_objects} == set(range(len(OBJECT_CLASS_NAMES)))

    # Same arguments again: nothing rewritten (same manifest, same files and times).
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((tmp_path / "syn").rglob("*"))
              if p.is_file()}
    write_synthetic(tmp_path / "syn", n=40, size=32, dup_fraction=0.1, seed=0,
                    samples_per_shard=16, objects_per_class=2)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((tmp_path / "syn").rglob("*"))
             if p.is_file()}
    assert after == before

    # Other arguments: rewritten, and no stale shards of the first write remain.
    write_synthetic(tmp_path / "syn", n=20, size=32, dup_fraction=0.1, seed=0,
                    samples_per_shard=16, objects_per_class=2)
    train = Manifest.load(paths["train"])
    assert train.total_samples == 20
    assert sorted(p.name for p in paths["train"].glob("shard-*.tar")) == [s.name for s in train.shards]
