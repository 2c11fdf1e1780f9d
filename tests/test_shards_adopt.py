"""`dftrain shard adopt`: img2dataset's folder layout indexed in place, then read by every stage."""

from __future__ import annotations

import subprocess
import sys

import pytest
from process_helpers import run_group
from shards_helpers import img2dataset_folder, make_jpeg, write_raw_tar

from dftrain.shards import Manifest, iter_samples
from dftrain.shards.adopt import adopt
from dftrain.shards.manifest import ShardError, sha256_file


def test_adopt_indexes_every_tar_and_keeps_every_field(tmp_path):
    folder = img2dataset_folder(tmp_path / "laion")
    report = adopt(folder)
    assert report.manifest_written and report.samples_ok == report.samples_found == 12 and not report.problems
    manifest = Manifest.load(folder)
    assert [s.name for s in manifest.shards] == ["00000.tar", "00001.tar", "00002.tar"]
    assert all(s.sha256 == sha256_file(folder / s.name) for s in manifest.shards)
    assert manifest.extra["img2dataset"] == {"count": 18, "successes": 12, "failed_to_download": 3,
                                             "failed_to_resize": 3}
    sample = next(iter_samples(folder, rank=0, world_size=1, decode=False))
    assert sample["txt"].startswith("photo ") and sample["json"]["url"].startswith("https://")
    assert sample["json"]["original_width"] == 640  # img2dataset's own fields are kept
    with pytest.raises(ShardError, match="already has a manifest.json"):
        adopt(folder)


def test_bad_samples_are_counted_and_a_damaged_tar_left_out(tmp_path):
    folder = img2dataset_folder(tmp_path / "laion")
    write_raw_tar(folder / "00001.tar", [("000010000.jpg", b"\xff\xd8 broken"), ("000010000.txt", b"x"),
                                         ("000010001.jpg", make_jpeg(1)), ("000010001.txt", b"a cat")])
    broken = folder / "00002.tar"
    broken.write_bytes(broken.read_bytes()[:700])  # cut inside a member
    report = adopt(folder)
    assert report.excluded == ["00002.tar"]
    assert report.samples_found == 6 and report.samples_ok == 5
    assert any("000010000" in p for p in report.problems)
    manifest = Manifest.load(folder)
    assert [s.name for s in manifest.shards] == ["00000.tar", "00001.tar"]
    assert len(list(iter_samples(folder, rank=0, world_size=1))) == 5  # the reader skips what adopt counted


def test_two_ranks_then_the_same_manifest_as_one(tmp_path):
    one, two = img2dataset_folder(tmp_path / "one"), img2dataset_folder(tmp_path / "two")
    adopt(one)
    first = adopt(two, rank=1, world_size=2)
    assert not first.manifest_written and first.waiting_for == 1 and not (two / "manifest.json").exists()
    second = adopt(two, rank=0, world_size=2)
    assert second.manifest_written and not list(two.glob(".adopt-part-*"))
    assert Manifest.load(two).shards == Manifest.load(one).shards


def test_cli_adopt_then_stages_accept_the_folder(tmp_path):
    folder = img2dataset_folder(tmp_path / "laion")
    refused = subprocess.run([sys.executable, "-m", "dftrain", "shard", "info", str(folder)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "no manifest.json" in refused.stdout + refused.stderr
    result = run_group([sys.executable, "-m", "dftrain", "shard", "adopt", str(folder)], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "12/12 samples usable" in result.stdout and "3 failed downloads" in result.stdout
    for args in (["shard", "validate", str(folder)], ["shard", "info", str(folder)]):
        check = run_group([sys.executable, "-m", "dftrain", *args], timeout=120)
        assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
