"""--engine ray: the generalize pass on a local Ray instance (2 workers, the embedded model) writes the same
shards as the plain runner."""

from __future__ import annotations

import pytest
from generalize_helpers import write_input_shards

from dftrain.errors import ConfigError
from dftrain.generalize.stage import generalize_shards

SHARDS = [["a red car parked on a street in Paris", "Nike running shoes, size 10", "a cat sleeping on a sofa"],
          ["a cat sleeping on a sofa", "Sunset over the sea in 2019", "a red car parked on a street in Paris"],
          ["a golden retriever puppy in a park", "Nike running shoes, size 10"]]


def run(in_dir, out_dir, **kwargs):
    return generalize_shards(in_dir, out_dir, backend="embedded", score="off", faithful=False, progress=False,
                             rank=0, world_size=1, dedup_parts=4, **kwargs)


def test_ray_needs_global_dedup_and_one_driver(tmp_path):
    pytest.importorskip("ray")
    in_dir = write_input_shards(tmp_path / "in", SHARDS)
    with pytest.raises(ConfigError, match="use it with --dedup global"):
        run(in_dir, tmp_path / "out", engine="ray", dedup="shard")
    with pytest.raises(ConfigError, match="start one driver"):
        generalize_shards(in_dir, tmp_path / "out", engine="ray", rank=0, world_size=2, dedup_pass="generalize")


@pytest.mark.multiproc
def test_two_ray_workers_write_the_same_shards_as_the_plain_runner(tmp_path):
    ray = pytest.importorskip("ray")
    in_dir = write_input_shards(tmp_path / "in", SHARDS)
    plain = run(in_dir, tmp_path / "plain")
    try:
        report = run(in_dir, tmp_path / "ray", engine="ray", ray_workers=2)
    finally:
        ray.shutdown()
    passes = report.passes["generalize"]
    assert passes["engine"] == "ray" and passes["workers"] == 2
    assert passes["asked"] == 5 and passes["samples"] == 8  # each distinct caption once, over the workers
    assert len(passes["written"]) + len(passes["skipped_done"]) == 4
    assert report.manifest_written and report.written == plain.written
    tars = {p.name: p.read_bytes() for p in sorted((tmp_path / "plain").glob("*.tar"))}
    assert tars and tars == {p.name: p.read_bytes() for p in sorted((tmp_path / "ray").glob("*.tar"))}
