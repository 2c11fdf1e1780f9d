"""Atomic writes: SIGKILL `dftrain shard build` mid-shard, re-run, and nothing is lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from shards_helpers import make_jpeg, slow_dftrain

from dftrain.shards import Manifest, ShardError, iter_samples
from dftrain.shards.validate import validate

N_IMAGES = 12
PER_SHARD = 4


def build_command(images, captions, out):
    return [sys.executable, "-m", "dftrain", "shard", "build", "--images", str(images), "--captions", str(captions),
            "--out", str(out), "--samples-per-shard", str(PER_SHARD)]


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.multiproc
def test_sigkill_mid_shard_then_rerun_loses_and_duplicates_nothing(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(N_IMAGES):
        (images / f"img{i:02d}.jpg").write_bytes(make_jpeg(i))
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({f"img{i:02d}": f"caption {i}" for i in range(N_IMAGES)}))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    process = subprocess.Popen(slow_dftrain(0.25, *build_command(images, captions, out)[3:]), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill once the first shard is finished and the second is being written.
        mid_shard = wait_for(lambda: (out / "shard-000000.tar").exists() and (out / "shard-000001.tar.tmp").exists())
        assert mid_shard, "the build never reached the second shard"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()  # the interrupted folder does not look finished
    assert (out / "shard-000001.tar.tmp").exists() and not (out / "shard-000001.tar").exists()
    with pytest.raises(ShardError, match="no manifest.json"):
        iter_samples(out)
    first_shard = (out / "shard-000000.tar").read_bytes()

    rerun = subprocess.run(build_command(images, captions, out), env=env,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(out.glob("*.tmp"))
    report = validate(out)
    assert report.ok, [str(p) for p in report.problems]
    manifest = Manifest.load(out)
    assert [s.samples for s in manifest.shards] == [4, 4, 4]
    assert (out / "shard-000000.tar").read_bytes() == first_shard  # rewritten identically
    captions_read = sorted(s["txt"] for s in iter_samples(out, rank=0, world_size=1, decode=False))
    assert captions_read == sorted(f"caption {i}" for i in range(N_IMAGES))
