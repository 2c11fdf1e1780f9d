"""One limit policy (dftrain/shards/limits.py) and one key rule, applied by the reader, validate and build."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tracemalloc

import pytest
from shards_helpers import (
    jpeg_claiming,
    make_jpeg,
    tar_header,
    write_raw_tar,
    write_tar_with_huge_member,
)

from dftrain.errors import ConfigError
from dftrain.shards import Manifest, ShardError, ShardInfo, SkipStats, iter_samples, sha256_file
from dftrain.shards.build import build_shards
from dftrain.shards.limits import Limits
from dftrain.shards.validate import validate

GOOD = [("000000000.jpg", make_jpeg(0)), ("000000000.txt", b"a red star")]


def with_manifest(folder, *tars, samples=None, real_sha=True):
    """A manifest listing raw tars (as `shard build` would have, for tars written by another tool)."""
    shards = []
    for i, tar in enumerate(tars):
        count = samples[i] if samples else 1
        digest = sha256_file(tar) if real_sha else "0" * 64
        shards.append(ShardInfo(tar.name, count, digest, tar.stat().st_size))
    Manifest(kind="train", shards=shards, command="test").save(folder)
    return folder


def read_all(source, **kwargs):
    stats = SkipStats()
    samples = list(iter_samples(source, rank=0, world_size=1, stats=stats, **kwargs))
    return samples, stats


def test_defaults_and_environment():
    limits = Limits()
    assert limits.max_pixels < 89_478_485  # well under PIL's own limit
    env = {"DFTRAIN_MAX_PIXELS": "1000", "DFTRAIN_MAX_CAPTION_BYTES": "5"}
    assert Limits.from_env(env) == Limits(max_pixels=1000, max_caption_bytes=5)
    assert Limits.from_env(Limits(max_member_bytes=7).env()).max_member_bytes == 7
    with pytest.raises(ConfigError, match="DFTRAIN_MAX_PIXELS must be an integer"):
        Limits.from_env({"DFTRAIN_MAX_PIXELS": "lots"})
    with pytest.raises(ConfigError, match="positive"):
        Limits(max_pixels=0)


def test_member_claiming_50_gib_is_skipped_without_reading(tmp_path):
    tar = write_tar_with_huge_member(tmp_path / "shard-000000.tar", GOOD, "000000001.jpg", 50 * 2**30)
    samples, stats = read_all(tar)
    assert [s["__key__"] for s in samples] == ["000000000"]
    assert ("000000001", "member too large") in stats.problems
    report = validate(with_manifest(tmp_path, tar, samples=[2]))
    assert any(p.key == "000000001" and p.reason == "member too large" for p in report.problems)


def test_sparse_2_gib_member_is_skipped_in_little_memory(tmp_path):
    tar = write_tar_with_huge_member(tmp_path / "shard-000000.tar", GOOD, "000000001.jpg", 2 * 2**30, sparse=True)
    assert tar.stat().st_blocks * 512 < 2**20  # the hole takes no disk space
    tracemalloc.start()
    try:
        samples, stats = read_all(tar, decode=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [s["__key__"] for s in samples] == ["000000000", "999999999"]  # the sample after it is read
    assert stats.problems == [("000000001", "member too large")]
    assert peak < 50 * 2**20


def test_sparse_member_in_validate(tmp_path):
    tar = write_tar_with_huge_member(tmp_path / "shard-000000.tar", GOOD, "000000001.jpg", 80 * 2**20, sparse=True)
    report = validate(with_manifest(tmp_path, tar, samples=[3]))
    assert [(p.key, p.reason) for p in report.problems] == [("000000001", "member too large")]
    assert report.samples_ok == 2


def test_huge_pax_header_is_damage_and_not_read(tmp_path, caplog):
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 40 * 2**30
    tar = tmp_path / "shard-000000.tar"
    tar.write_bytes(pax.tobuf(format=tarfile.GNU_FORMAT) + tar_header("000000000.jpg", 10) + b"\0" * 1024)
    samples, stats = read_all(tar)
    assert samples == [] and list(stats.skipped) == ["corrupt tar"]
    assert "extension header at byte 0 claims 42949672960 bytes" in caplog.text


def test_jpeg_claiming_13000_squared_pixels_is_refused_from_its_header(tmp_path):
    bomb = jpeg_claiming(13000, 13000)
    assert len(bomb) < 1000
    tar = write_raw_tar(tmp_path / "shard-000000.tar", GOOD + [("000000001.jpg", bomb), ("000000001.txt", b"x")])
    for decode in (True, False):  # the same samples are skipped whether or not the stage decodes
        samples, stats = read_all(tar, decode=decode)
        assert [s["__key__"] for s in samples] == ["000000000"]
        assert stats.problems == [("000000001", "image too large")]
    report = validate(with_manifest(tmp_path, tar, samples=[2]))
    assert [(p.key, p.reason) for p in report.problems] == [("000000001", "image too large")]
    with pytest.raises(ShardError, match="strict mode: shard-000000.tar: sample 000000001: image too large"):
        read_all(tar, strict=True)
    # Raised limits let it pass the header check (decoding the 631-byte file then fails)
    samples, stats = read_all(tar, decode=False, limits=Limits(max_pixels=200_000_000))
    assert len(samples) == 2


def test_caption_over_the_byte_limit_is_skipped(tmp_path):
    tar = write_raw_tar(tmp_path / "shard-000000.tar",
                        GOOD + [("000000001.jpg", make_jpeg(1)), ("000000001.txt", "é".encode() * 6000)])
    samples, stats = read_all(tar, decode=False)
    assert [s["__key__"] for s in samples] == ["000000000"]
    assert stats.problems == [("000000001", "caption too long")]  # 12,000 bytes, 6,000 characters


@pytest.mark.parametrize("name, why", [
    ("../evil", "forbidden characters"), ("/etc/evil", "absolute path"), ("", "empty key"),
    ("a\x1bb", "forbidden characters"), ("dir//x", "empty path component"), ("a\\b", "forbidden characters"),
])
def test_unsafe_keys_are_skipped_by_the_reader_and_reported_by_validate(tmp_path, name, why):
    tar = write_raw_tar(tmp_path / "shard-000000.tar", GOOD + [(f"{name}.jpg", make_jpeg(5)), (f"{name}.txt", b"x")])
    samples, stats = read_all(tar)
    assert [s["__key__"] for s in samples] == ["000000000"]
    assert list(stats.skipped.items()) == [("unsafe key", 1)]
    report = validate(with_manifest(tmp_path, tar, samples=[2]))
    (problem,) = report.problems
    assert problem.reason == "unsafe key" and why in problem.detail and problem.key == repr(name)
    assert "\x1b" not in str(problem)


def test_build_applies_the_same_limits(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "ok.jpg").write_bytes(make_jpeg(1))
    (images / "bomb.jpg").write_bytes(jpeg_claiming(13000, 13000))
    (images / "long.jpg").write_bytes(make_jpeg(2))
    (images / "big.jpg").write_bytes(make_jpeg(3))
    captions = tmp_path / "c.json"
    captions.write_text(json.dumps({"ok": "fine", "bomb": "a bomb", "long": "x" * 1_000_000, "big": "large file"}))
    report = build_shards(images, captions, tmp_path / "out", limits=Limits(max_member_bytes=len(make_jpeg(3)) - 1))
    assert dict(report.stats.problems) == {"bomb": "image too large", "long": "caption too long",
                                           "big": "image file too large"}
    # Nothing it stored is refused by its own validate
    assert validate(tmp_path / "out").ok
    assert Manifest.load(tmp_path / "out").extra["limits"]["max_pixels"] == Limits().max_pixels


def test_global_options_reach_every_command(tmp_path):
    tar = write_raw_tar(tmp_path / "shard-000000.tar", GOOD)
    with_manifest(tmp_path, tar)
    ok = subprocess.run([sys.executable, "-m", "dftrain", "shard", "validate", str(tmp_path)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    small = subprocess.run([sys.executable, "-m", "dftrain", "--max-pixels", "100", "shard", "validate",
                            str(tmp_path)], capture_output=True, text=True)
    assert small.returncode == 1
    assert "sample 000000000: image too large (24x24 = 576 pixels > max_pixels 100)" in small.stdout


def test_header_size_agrees_with_pil_and_falls_back_for_other_formats():
    import io

    import numpy as np
    from PIL import Image

    from dftrain.shards.limits import header_size

    def encoded(fmt, **options):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((33, 47, 3), np.uint8)).save(buffer, fmt, **options)
        return buffer.getvalue()

    for data in (encoded("JPEG"), encoded("JPEG", progressive=True), encoded("JPEG", exif=Image.Exif().tobytes()),
                 encoded("PNG"), jpeg_claiming(13000, 9000)):
        with Image.open(io.BytesIO(data)) as img:
            assert header_size(data) == img.size
    assert header_size(encoded("WEBP")) is None  # PIL reads it
    assert Limits().check_image_header(encoded("WEBP")) == (47, 33)
    assert header_size(b"\xff\xd8\xff\xda garbage") is None
    with pytest.raises(Exception, match="undecodable image"):
        Limits().check_image_header(b"not an image at all")
