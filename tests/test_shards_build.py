"""`shard build` (captions as JSON, JSONL, CSV) and `shard objects` (class folders, Tiny-ImageNet)."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image
from shards_helpers import make_jpeg, make_png

from dftrain.errors import ConfigError
from dftrain.shards import Manifest, ShardError, SkipStats, iter_samples
from dftrain.shards.build import build_objects, build_shards, load_captions

CAPTIONS = {"cat_01": "A cat on a mat", "dog_02": ["A dog", "A brown dog in Paris"], "logo": "Logo of ACME 3000"}


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    (folder / "cat_01.jpg").write_bytes(make_jpeg(1, size=30))
    (folder / "nested" / "dog_02.JPEG").write_bytes(make_jpeg(2, size=20))
    (folder / "logo.png").write_bytes(make_png(3, size=16))  # RGBA: converted to JPEG
    (folder / "uncaptioned.jpg").write_bytes(make_jpeg(4))
    return folder


def write_captions(path, fmt):
    if fmt == "json":
        path.write_text(json.dumps(CAPTIONS))
    elif fmt == "jsonl":
        lines = []
        for key, value in CAPTIONS.items():
            field = "captions" if isinstance(value, list) else "caption"
            lines.append(json.dumps({"key": key, field: value}))
        path.write_text("\n".join(lines) + "\n")
    else:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["key", "caption"])
            for key, value in CAPTIONS.items():
                for caption in value if isinstance(value, list) else [value]:
                    writer.writerow([key, caption])
    return path


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_build_from_each_captions_format(tmp_path, image_dir, fmt):
    captions = write_captions(tmp_path / f"captions.{fmt}", fmt)
    report = build_shards(image_dir, captions, tmp_path / "out", samples_per_shard=2, command="cmd")
    assert report.written == 3 and report.shards == 2 and report.stats.total_skipped == 0
    assert report.unused_images == 1
    samples = list(iter_samples(tmp_path / "out", rank=0, world_size=1))
    by_caption_key = {s["json"]["caption_key"]: s for s in samples}
    assert sorted(by_caption_key) == sorted(CAPTIONS)
    cat, dog, logo = by_caption_key["cat_01"], by_caption_key["dog_02"], by_caption_key["logo"]
    assert cat["jpg"] == (image_dir / "cat_01.jpg").read_bytes()  # JPEG copied byte for byte
    assert cat["txt"] == "A cat on a mat" and "captions" not in cat["json"]
    assert cat["json"]["width"] == 30 and cat["json"]["source"] == "cat_01.jpg"
    assert dog["txt"] == "A dog" and dog["json"]["captions"] == ["A dog", "A brown dog in Paris"]
    assert dog["json"]["source"] == "nested/dog_02.JPEG"
    assert logo["jpg"][:2] == b"\xff\xd8" and logo["image"].size == (19, 16)
    assert [s["__key__"] for s in samples] == sorted(s["__key__"] for s in samples)
    assert Manifest.load(tmp_path / "out").command == "cmd"


def test_build_skips_missing_and_undecodable_images_with_keys(tmp_path, image_dir):
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    captions = tmp_path / "c.json"
    captions.write_text(json.dumps({**CAPTIONS, "broken": "x", "ghost": "no such image", "blank": "  "}))
    report = build_shards(image_dir, captions, tmp_path / "out")
    assert report.written == 3
    assert dict(report.stats.problems) == {
        "broken": "undecodable image", "ghost": "missing image", "blank": "empty caption"}
    assert Manifest.load(tmp_path / "out").extra["skipped"] == {
        "undecodable image": 1, "missing image": 1, "empty caption": 1}
    with pytest.raises(ShardError, match="strict mode: ghost: missing image"):  # the first in file order
        build_shards(image_dir, captions, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict" / "manifest.json").exists()


def test_build_is_deterministic(tmp_path, image_dir):
    captions = write_captions(tmp_path / "c.jsonl", "jsonl")
    build_shards(image_dir, captions, tmp_path / "a", samples_per_shard=2)
    build_shards(image_dir, captions, tmp_path / "b", samples_per_shard=2)
    assert [s.sha256 for s in Manifest.load(tmp_path / "a").shards] == [
        s.sha256 for s in Manifest.load(tmp_path / "b").shards]


def test_captions_file_errors(tmp_path):
    bad = tmp_path / "c.csv"
    bad.write_text("name,text\na,b\n")
    with pytest.raises(ConfigError, match="'key' and 'caption'"):
        load_captions(bad)
    with pytest.raises(ConfigError, match="unknown format"):
        load_captions(bad.rename(tmp_path / "c.txt"))
    lines = tmp_path / "c.jsonl"
    lines.write_text('{"key": "a", "caption": "ok"}\nnot json\n{"key": "b", "caption": 3}\n')
    loaded = load_captions(lines)
    assert loaded.captions == {"a": ["ok"]}
    assert [where for where, _ in loaded.problems] == ["line 2", "b"]


def _save_image(path, seed, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make_jpeg(seed) if fmt == "JPEG" else make_png(seed, mode="RGB"))


def test_objects_from_class_folders(tmp_path):
    root = tmp_path / "bank"
    for c, name in enumerate(["teapot", "bicycle", "apple"]):
        for i in range(2):
            _save_image(root / name / f"{i}.jpg", 10 * c + i)
    (root / "empty").mkdir()
    report = build_objects(root, tmp_path / "out", samples_per_shard=4)
    assert report.written == 6
    manifest = Manifest.load(tmp_path / "out")
    assert manifest.kind == "objects"
    assert [(c["class_id"], c["class_name"], c["samples"]) for c in manifest.extra["classes"]] == [
        (0, "apple", 2), (1, "bicycle", 2), (2, "teapot", 2)]
    stats = SkipStats()
    samples = list(iter_samples(tmp_path / "out", rank=0, world_size=1, require=("jpg", "cls"), stats=stats))
    assert len(samples) == 6 and stats.total_skipped == 0
    for sample in samples:
        assert sample["json"]["class_name"] == ["apple", "bicycle", "teapot"][sample["cls"]]
        assert sample["json"]["class_id"] == sample["cls"] and "wnid" not in sample["json"]
        assert sample["json"]["source"].startswith(sample["json"]["class_name"] + "/")


def test_objects_from_tiny_imagenet_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    (root / "val").mkdir(parents=True)
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02085620\tChihuahua\nn0000\tunused\n")
    (root / "wnids.txt").write_text("n01443537\nn02085620\n")
    for c, wnid in enumerate(["n02085620", "n01443537"]):
        for i in range(3):
            _save_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 10 * c + i)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored")
    report = build_objects(root, tmp_path / "out")
    assert report.written == 6
    classes = Manifest.load(tmp_path / "out").extra["classes"]
    assert classes == [
        {"class_id": 0, "class_name": "goldfish", "samples": 3, "wnid": "n01443537",
         "class_synonyms": ["goldfish", "Carassius auratus"]},
        {"class_id": 1, "class_name": "Chihuahua", "samples": 3, "wnid": "n02085620"},
    ]
    samples = list(iter_samples(tmp_path / "out", rank=0, world_size=1, require=("jpg", "cls")))
    assert {(s["cls"], s["json"]["wnid"], s["json"]["class_name"]) for s in samples} == {
        (0, "n01443537", "goldfish"), (1, "n02085620", "Chihuahua")}
    # every synonym is kept for the training's draws; a class with one name lists none
    assert {s["json"]["class_name"]: s["json"].get("class_synonyms") for s in samples} == {
        "goldfish": ["goldfish", "Carassius auratus"], "Chihuahua": None}
    # pointing at train/ directly works too
    assert build_objects(root / "train", tmp_path / "out2").written == 6


def test_objects_png_is_converted_and_bad_image_skipped(tmp_path):
    root = tmp_path / "bank"
    _save_image(root / "cup" / "a.png", 1, fmt="PNG")
    (root / "cup" / "b.jpg").write_bytes(b"garbage")
    report = build_objects(root, tmp_path / "out")
    assert report.written == 1
    assert report.stats.problems == [("cup/b.jpg", "undecodable image")]
    (sample,) = iter_samples(tmp_path / "out", rank=0, world_size=1, require=("jpg", "cls"))
    assert sample["jpg"][:2] == b"\xff\xd8" and isinstance(sample["image"], Image.Image)


@pytest.mark.multiproc
def test_parallel_build_gives_identical_shards(tmp_path, image_dir):
    (image_dir / "broken.jpg").write_bytes(b"garbage")
    captions = tmp_path / "c.json"
    captions.write_text(json.dumps({**CAPTIONS, "broken": "x"}))
    one = build_shards(image_dir, captions, tmp_path / "one", samples_per_shard=2)
    two = build_shards(image_dir, captions, tmp_path / "two", samples_per_shard=2, workers=2)
    assert one.stats.problems == two.stats.problems == [("broken", "undecodable image")]
    assert [s.sha256 for s in Manifest.load(tmp_path / "one").shards] == [
        s.sha256 for s in Manifest.load(tmp_path / "two").shards]


def test_duplicates_in_captions_are_reported_and_kept_once(tmp_path, image_dir):
    captions = tmp_path / "c.json"
    captions.write_text('{"cat_01": "A cat", "cat_01": ["A cat", "A cat on a mat"], "nested/dog_02": "A dog",'
                        ' "dog_02": "A brown dog"}')
    loaded = load_captions(captions)
    assert loaded.captions["cat_01"] == ["A cat", "A cat on a mat"]
    assert [key for key, _ in loaded.duplicates] == ["cat_01", "cat_01"]  # the key, then its repeated caption
    report = build_shards(image_dir, captions, tmp_path / "out")
    assert report.duplicates == 3 and report.written == 2  # nested/dog_02 and dog_02 are one image
    by_key = {s["json"]["caption_key"]: s for s in iter_samples(tmp_path / "out", rank=0, world_size=1, decode=False)}
    # The first key in file order names the sample; the later one's captions join it.
    assert by_key["nested/dog_02"]["json"]["captions"] == ["A dog", "A brown dog"]
    assert by_key["nested/dog_02"]["json"]["other_caption_keys"] == ["dog_02"]
    assert Manifest.load(tmp_path / "out").extra["duplicates"] == 3
    with pytest.raises(ShardError, match="strict mode: captions key cat_01: key given twice"):
        build_shards(image_dir, captions, tmp_path / "strict", strict=True)


def test_build_refuses_a_foreign_folder_before_any_work(tmp_path, image_dir):
    from dftrain.outputs import OutputError

    out = tmp_path / "theirs"
    out.mkdir()
    (out / "shard-000000.tar").write_bytes(b"their data")
    captions = write_captions(tmp_path / "c.json", "json")
    with pytest.raises(OutputError, match="dftrain did not write"):
        build_shards(image_dir, captions, out)
    assert (out / "shard-000000.tar").read_bytes() == b"their data"
    assert build_shards(image_dir, captions, out, overwrite=True).written == 3


# --- at scale: streamed captions, ranks + merge ---------------------------------------------------------

def _many_images(folder, n):
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"{i:05d}.jpg").write_bytes(make_jpeg(i, size=12))
    return folder


def _manifest_content(folder):
    manifest = Manifest.load(folder).to_dict()
    return {k: v for k, v in manifest.items() if k not in ("created", "command")}


def test_two_ranks_then_merge_equal_one_process(tmp_path):
    images = _many_images(tmp_path / "images", 9)
    lines = [json.dumps({"key": f"{i:05d}", "caption": f"caption {i}"}) for i in range(9)]
    lines[4] = json.dumps({"key": "ghost", "caption": "no image"})  # a skipped entry: shard 1 is shorter
    lines.insert(2, json.dumps({"key": "00001", "caption": "caption 1, again"}))  # consecutive: one entry
    captions = tmp_path / "captions.jsonl"
    captions.write_text("\n".join(lines) + "\n")
    one = build_shards(images, captions, tmp_path / "one", samples_per_shard=3)
    assert one.manifest_written and one.written == 8 and one.shards == 3
    first = build_shards(images, captions, tmp_path / "two", samples_per_shard=3, rank=1, world_size=2)
    assert not first.manifest_written and first.waiting_for == [0] and first.shards == 1
    assert not (tmp_path / "two" / "manifest.json").exists()
    second = build_shards(images, captions, tmp_path / "two", samples_per_shard=3, rank=0, world_size=2)
    assert second.manifest_written and second.shards == 2
    assert _manifest_content(tmp_path / "two") == _manifest_content(tmp_path / "one")  # same tars, same sha256
    assert not list((tmp_path / "two").glob(".build-part-*"))
    shard_sizes = [s["samples"] for s in _manifest_content(tmp_path / "one")["shards"]]
    assert shard_sizes == [3, 2, 3]  # chunk j -> shard j; the ghost made shard 1 shorter
    dog = [s for s in iter_samples(tmp_path / "one", rank=0, world_size=1, decode=False)
           if s["json"]["caption_key"] == "00001"]
    assert dog[0]["json"]["captions"] == ["caption 1", "caption 1, again"]


def test_merge_by_hand_and_a_stale_part_does_not_count(tmp_path):
    from dftrain.shards.build import merge_captions_build

    images = _many_images(tmp_path / "images", 4)
    captions = tmp_path / "captions.csv"
    captions.write_text("key,caption\n" + "".join(f"{i:05d},caption {i}\n" for i in range(4)))
    out = tmp_path / "out"
    build_shards(images, captions, out, samples_per_shard=2, rank=0, world_size=2)
    # A rank-1 part of an earlier build from other captions: not this build's, so no manifest yet.
    other = tmp_path / "other.csv"
    other.write_text("key,caption\n00000,something else\n")
    build_shards(images, other, out, samples_per_shard=2, rank=1, world_size=2)
    assert merge_captions_build(images, captions, out, samples_per_shard=2, match="index", world_size=2) is None
    build_shards(images, captions, out, samples_per_shard=2, rank=1, world_size=2)
    assert Manifest.load(out).total_samples == 4


def test_path_match_needs_no_listing_and_finds_img2dataset_file_layout(tmp_path, monkeypatch):
    import dftrain.shards.build as build

    images = tmp_path / "images"
    (images / "00000").mkdir(parents=True)
    (images / "00000" / "000000000.jpg").write_bytes(make_jpeg(1))  # img2dataset's output_format "files"
    (images / "top.png").write_bytes(make_png(2, mode="RGB"))
    captions = tmp_path / "00000.jsonl"
    captions.write_text(json.dumps({"key": "000000000", "caption": "a"}) + "\n" +
                        json.dumps({"key": "top", "caption": "b"}) + "\n" +
                        json.dumps({"key": "../escape", "caption": "c"}) + "\n")
    monkeypatch.setattr(build, "list_images", lambda folder: pytest.fail("path mode must not list the folder"))
    report = build_shards(images, captions, tmp_path / "out", match="path")
    assert report.written == 2 and dict(report.stats.problems) == {"../escape": "missing image"}
    assert Manifest.load(tmp_path / "out").extra["images_without_caption"] is None  # not known without a listing


def test_captions_are_a_stream(tmp_path):
    """The reader is a generator: a big captions file is never held (peak memory stays far below its size)."""
    import tracemalloc

    from dftrain.shards.captions import caption_entries

    captions = tmp_path / "big.csv"
    with open(captions, "w") as handle:
        handle.write("key,caption\n")
        for i in range(60_000):
            handle.write(f"k{i:06d},a fairly long caption number {i} with some words in it to take room\n")
    size = captions.stat().st_size
    entries = caption_entries(captions)
    assert next(entries).key == "k000000"  # an iterator: nothing read beyond what was asked for
    tracemalloc.start()
    count = 1 + sum(1 for _ in entries)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 60_000 and peak < size / 20, (peak, size)


def test_parquet_as_img2dataset_writes_it_and_a_captions_folder(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    images = _many_images(tmp_path / "images", 4)
    folder = tmp_path / "captions"
    folder.mkdir()
    pq.write_table(pa.table({"url": ["u0", "u1", "u2"], "key": ["00000", "00001", "00002"],
                             "caption": ["zero", "one", None], "status": ["success", "success", "failed_to_download"]}),
                   folder / "00000.parquet")
    (folder / "00001.jsonl").write_text(json.dumps({"key": "00003", "caption": "three"}) + "\n")
    report = build_shards(images, folder, tmp_path / "out", samples_per_shard=2)
    assert report.written == 3
    assert dict(report.stats.skipped) == {"failed download": 1}  # counted, not an error
    texts = [s["txt"] for s in iter_samples(tmp_path / "out", rank=0, world_size=1, decode=False)]
    assert texts == ["zero", "one", "three"]
    assert build_shards(images, folder, tmp_path / "strict", strict=True).written == 3  # not an error in strict


def test_parquet_without_pyarrow_is_one_clear_line(tmp_path, monkeypatch):
    import builtins

    from dftrain.errors import MissingDependencyError

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("no pyarrow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    (tmp_path / "c.parquet").write_bytes(b"PAR1")
    with pytest.raises(MissingDependencyError, match=r"needs pyarrow \(pip install 'dftrain\[parquet\]'\)"):
        build_shards(tmp_path, tmp_path / "c.parquet", tmp_path / "out")
