"""The memorization regime: compositional scenes, a duplicated subset, unique specific captions, held-out set."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest
from PIL import Image
from typer.testing import CliRunner

from dftrain.errors import ConfigError
from dftrain.synthetic import regime_heldout_samples, regime_train_samples, write_regime
from dftrain.synthetic.captions import BRANDS, CITIES, FIRST_NAMES
from dftrain.synthetic.scenes import dominant_colour

N, K, F, SIZE = 60, 4, 6, 32


@pytest.fixture(scope="module")
def samples():
    return list(regime_train_samples(N, K, F, SIZE, seed=5))


def _groups(samples):
    groups = defaultdict(list)
    for s in samples:
        groups[s["json"]["group"]].append(s)
    return groups


def test_counts_of_the_duplicated_subset(samples):
    assert len(samples) == N - K + K * F
    assert len({s["__key__"] for s in samples}) == len(samples)
    groups = _groups(samples)
    assert len(groups) == N
    sizes = Counter(len(members) for members in groups.values())
    assert sizes == {1: N - K, F: K}
    for members in groups.values():
        copies = len(members)
        assert {m["json"]["copies"] for m in members} == {copies}
        assert {m["json"]["duplicated"] for m in members} == {copies > 1}
        assert sorted(m["json"]["copy"] for m in members) == list(range(copies))
        # exact duplicates: the same JPEG bytes and the same caption
        assert len({m["jpg"] for m in members}) == 1 and len({m["txt"] for m in members}) == 1
    # the duplicated images are a seeded sample and their copies are spread through the set
    positions = [i for i, s in enumerate(samples) if s["json"]["duplicated"]]
    assert positions[0] < len(samples) // 3 and positions[-1] > 2 * len(samples) // 3


def test_deterministic_and_seed_dependent(samples):
    again = list(regime_train_samples(N, K, F, SIZE, seed=5))
    assert [(s["__key__"], s["jpg"], s["txt"]) for s in again] == [(s["__key__"], s["jpg"], s["txt"]) for s in samples]
    other = list(regime_train_samples(N, K, F, SIZE, seed=6))
    assert not {s["jpg"] for s in other} & {s["jpg"] for s in samples}


def test_captions_are_unique_per_image_and_specific(samples):
    captions = {g: members[0]["txt"] for g, members in _groups(samples).items()}
    assert len(set(captions.values())) == N  # one caption per unique image, none shared
    specific = re.compile("|".join([r"\d", *BRANDS, *CITIES, *FIRST_NAMES]))
    assert all(specific.search(c) for c in captions.values())
    assert all(s["json"]["caption"] == s["txt"] for s in samples)


def test_scenes_are_compositional(samples):
    """Objects, colours and backgrounds vary independently: many distinct combinations, and held-out
    scenes show combinations the training set never had."""
    def combos(rows):
        return {tuple(sorted(r["json"]["content"].items())) for r in rows}

    train_combos = combos(samples)
    assert len(train_combos) == N  # no two unique images show the same combination
    mains = Counter(r["json"]["content"]["shape"] for r in samples)
    assert len(mains) >= 8  # most of the 12 object classes appear as the main object
    heldout = list(regime_heldout_samples(40, SIZE, seed=5))
    assert combos(heldout) - train_combos


def test_heldout_is_unseen_and_of_the_same_kind(samples):
    heldout = list(regime_heldout_samples(20, SIZE, seed=5))
    assert len(heldout) == 20 and len({h["jpg"] for h in heldout}) == 20
    assert not {h["jpg"] for h in heldout} & {s["jpg"] for s in samples}
    assert all(Image.open(__import__("io").BytesIO(h["jpg"])).size == (SIZE, SIZE) for h in heldout)
    assert not any(h["json"]["duplicated"] for h in heldout)


def test_dominant_colour_names_the_largest_area():
    layer = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    layer.paste((214, 39, 40, 255), (0, 0, 40, 30))  # red, 30 rows
    layer.paste((31, 90, 200, 255), (0, 30, 40, 40))  # blue, 10 rows
    assert dominant_colour(layer) == "red"


def test_bad_regime_arguments_are_clear_errors():
    with pytest.raises(ConfigError, match="--dup-images"):
        list(regime_train_samples(5, 6, 3, SIZE))
    with pytest.raises(ConfigError, match="--dup-factor"):
        list(regime_train_samples(5, 2, 1, SIZE))


def test_cli_writes_train_heldout_objects_and_is_idempotent(tmp_path):
    from dftrain.cli import app
    from dftrain.shards import Manifest

    args = ["shard", "synthetic", "--out", str(tmp_path / "d"), "--n", "20", "--dup-images", "2", "--dup-factor", "5",
            "--heldout", "7", "--size", "32", "--objects-per-class", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    counts = {part: Manifest.load(tmp_path / "d" / part).total_samples for part in ("train", "heldout", "objects")}
    assert counts["train"] == 18 + 2 * 5 and counts["heldout"] == 7 and counts["objects"] == 12
    extra = Manifest.load(tmp_path / "d" / "train").extra
    assert (extra["n"], extra["dup_images"], extra["dup_factor"]) == (20, 2, 5)
    before = (tmp_path / "d" / "train" / "manifest.json").stat().st_mtime_ns
    write_regime(tmp_path / "d", n=20, dup_images=2, dup_factor=5, heldout=7, size=32, objects_per_class=1)
    assert (tmp_path / "d" / "train" / "manifest.json").stat().st_mtime_ns == before  # left as is
    refused = CliRunner().invoke(app, [*args, "--dup-fraction", "0.2"])
    assert refused.exit_code != 0 and "--dup-factor" in str(refused.exception)
