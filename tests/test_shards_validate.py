"""`shard validate` / `shard info` / `shard build` through the CLI: every problem reported with its key, exit codes."""

from __future__ import annotations

import json

import pytest
from shards_helpers import flip_byte, key_of, make_jpeg, member_offset, truncate, write_dataset
from typer.testing import CliRunner

from dftrain.commands.shard import app
from dftrain.shards.validate import validate

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_valid_folder_passes(tmp_path):
    write_dataset(tmp_path, n=7, per_shard=3)
    report = validate(tmp_path)
    assert report.ok and report.samples_ok == 7 and report.shards_ok == 3
    result = run("validate", tmp_path)
    assert result.exit_code == 0, result.output
    assert "shards 3/3 ok, samples 7/7 ok" in result.output


@pytest.mark.parametrize(
    ("bad", "reason"),
    [({"txt": None}, "missing txt"), ({"txt": b"\xff\xfe caption"}, "non-utf8 txt"),
     ({"jpg": b"GIF89a nope"}, "undecodable image")],
)
def test_bad_sample_reported_with_key(tmp_path, bad, reason):
    write_dataset(tmp_path, n=6, per_shard=3, bad={4: bad})
    report = validate(tmp_path)
    assert [(p.shard, p.key, p.reason) for p in report.problems] == [("shard-000001.tar", key_of(4), reason)]
    assert report.samples_ok == 5
    result = run("validate", tmp_path)
    assert result.exit_code == 1
    assert f"shard-000001.tar sample {key_of(4)}: {reason}" in result.output
    strict = run("validate", tmp_path, "--strict")
    assert strict.exit_code == 1
    assert "strict mode" in strict.output and key_of(4) in strict.output and reason in strict.output


def test_truncated_tar(tmp_path):
    write_dataset(tmp_path, n=6, per_shard=3)
    shard = tmp_path / "shard-000000.tar"
    offset, size = member_offset(shard, f"{key_of(1)}.jpg")
    truncate(shard, offset + size // 2)
    report = validate(tmp_path)
    reasons = [(p.shard, p.key, p.reason) for p in report.problems]
    assert ("shard-000000.tar", None, "size mismatch") in reasons
    assert ("shard-000000.tar", None, "sha256 mismatch") in reasons
    assert ("shard-000000.tar", key_of(1), "corrupt tar") in reasons
    assert report.samples_ok == 4 and report.shards_ok == 1
    result = run("validate", tmp_path)
    assert result.exit_code == 1 and f"sample {key_of(1)}: corrupt tar" in result.output


def test_flipped_byte_in_image(tmp_path):
    write_dataset(tmp_path, n=6, per_shard=3)
    shard = tmp_path / "shard-000001.tar"
    offset, _ = member_offset(shard, f"{key_of(5)}.jpg")
    flip_byte(shard, offset + 1)  # second byte of the JPEG start-of-image marker
    report = validate(tmp_path)
    assert [(p.key, p.reason) for p in report.problems] == [(None, "sha256 mismatch"), (key_of(5), "undecodable image")]


def test_flipped_byte_in_caption_is_caught_by_checksum(tmp_path):
    write_dataset(tmp_path, n=3, per_shard=3)
    shard = tmp_path / "shard-000000.tar"
    offset, _ = member_offset(shard, f"{key_of(0)}.txt")
    flip_byte(shard, offset)  # 'c' -> 0x9c: also invalid UTF-8
    report = validate(tmp_path)
    assert [(p.key, p.reason) for p in report.problems] == [(None, "sha256 mismatch"), (key_of(0), "non-utf8 txt")]


def test_missing_shard_count_mismatch_and_leftovers(tmp_path):
    write_dataset(tmp_path, n=6, per_shard=3)
    (tmp_path / "shard-000001.tar").unlink()
    (tmp_path / "shard-000009.tar.tmp").write_bytes(b"partial")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["shards"][0]["samples"] = 4
    manifest["total_samples"] = 7
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    report = validate(tmp_path)
    assert [(p.shard, p.reason) for p in report.problems] == [
        ("shard-000000.tar", "sample count mismatch"), ("shard-000001.tar", "missing shard")]
    assert any("interrupted write" in w for w in report.warnings)


def test_duplicate_key_across_shards(tmp_path):
    from dftrain.shards import Manifest, write_shard

    infos = [write_shard(tmp_path / f"shard-00000{i}.tar", [{"__key__": "same", "jpg": make_jpeg(i), "txt": "t"}])
             for i in range(2)]
    Manifest(kind="train", shards=infos).save(tmp_path)
    assert [(p.key, p.reason) for p in validate(tmp_path).problems] == [("same", "duplicate key")]


def test_no_manifest_fails(tmp_path):
    result = run("validate", tmp_path)
    assert result.exit_code == 1 and "no manifest.json" in result.output


def test_cli_build_info_and_strict(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"img{i}.jpg").write_bytes(make_jpeg(i))
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"img0": "a", "img1": "b", "img2": "c", "img9": "no image"}))
    out = tmp_path / "out"
    result = run("build", "--images", images, "--captions", captions, "--out", out, "--samples-per-shard", 2)
    assert result.exit_code == 0, result.output
    assert "built: 3 samples in 2 shard(s)" in result.output and "missing image: 1" in result.output
    assert run("validate", out).exit_code == 0
    info = run("info", out)
    assert info.exit_code == 0 and "samples:  3" in info.output and "dftrain shard build --images" in info.output
    strict = run("build", "--images", images, "--captions", captions, "--out", tmp_path / "s", "--strict")
    assert strict.exit_code == 1 and "img9: missing image" in str(strict.exception)
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_cli_objects(tmp_path):
    for c in ("ant", "bee"):
        (tmp_path / "bank" / c).mkdir(parents=True)
        (tmp_path / "bank" / c / "x.jpg").write_bytes(make_jpeg(len(c)))
    result = run("objects", "--imagefolder", tmp_path / "bank", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "object bank with 2 classes: 2 samples" in result.output
    assert run("validate", tmp_path / "out").exit_code == 0
    assert "classes:  2: ant, bee" in run("info", tmp_path / "out").output


def test_cli_synthetic_writes_valid_train_and_objects(tmp_path):
    pytest.importorskip("dftrain.synthetic")
    result = run("synthetic", "--out", tmp_path, "--n", 12, "--size", 32, "--samples-per-shard", 5,
                 "--objects-per-class", 2)
    assert result.exit_code == 0, result.output
    for part, kind in (("train", "train"), ("objects", "objects")):
        report = validate(tmp_path / part)
        assert report.ok and report.kind == kind and report.samples_ok > 0, [str(p) for p in report.problems]
    assert f"{tmp_path / 'train'}: 12 samples in 3 shard(s)" in result.output
    # the synthetic bank's manifest lists its classes like `shard objects` does (info read them as dicts)
    info = run("info", tmp_path / "objects")
    assert info.exit_code == 0 and "classes:  12: apple, house, car" in info.output, info.output
