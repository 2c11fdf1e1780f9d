"""Resumable stages (dftrain/experiments/stages.py): reuse decided by arguments and the content of inputs and outputs."""

from __future__ import annotations

import json

from shards_helpers import make_jpeg

from dftrain.experiments.stages import Stage, is_done, run_stage, stage_inputs, stale_reason


def _plan(tmp_path):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for i in range(3):
        (images / f"im{i}.jpg").write_bytes(make_jpeg(i))
    captions = tmp_path / "captions.json"
    if not captions.exists():
        captions.write_text(json.dumps({f"im{i}": f"caption {i}" for i in range(3)}))
    shards = tmp_path / "run" / "shards"
    build = Stage("build", ["shard", "build", "--images", str(images), "--captions", str(captions), "--out", str(shards)],
                  [shards / "manifest.json"])
    check = Stage("check", ["shard", "validate", str(shards)], [])
    return tmp_path / "run", build, check, captions


def test_inputs_are_the_existing_paths_that_are_not_outputs(tmp_path):
    run_dir, build, check, captions = _plan(tmp_path)
    assert stage_inputs(build) == [tmp_path / "images", captions]  # --out is an output
    assert stage_inputs(check) == []  # its shard folder does not exist yet


def test_changed_input_content_reruns_the_stage_and_the_stages_after_it(tmp_path):
    run_dir, build, check, captions = _plan(tmp_path)
    assert [run_stage(run_dir, s).status for s in (build, check)] == ["ran", "ran"]
    assert [run_stage(run_dir, s).status for s in (build, check)] == ["reused", "reused"]

    # Same path, same size, other content: the build and the check of its output run again.
    captions.write_text(captions.read_text().replace("caption 1", "caption 7"))
    assert stale_reason(run_dir, build) == f"input changed: {captions}"
    assert run_stage(run_dir, build).status == "ran"
    assert stale_reason(run_dir, check).startswith("input changed")
    assert run_stage(run_dir, check).status == "ran"

    # A rebuild that writes the same content leaves the later stage reused.
    (run_dir / ".stages" / "build.json").unlink()
    assert run_stage(run_dir, build).status == "ran"
    assert is_done(run_dir, check)


def test_output_changed_by_someone_else_reruns(tmp_path):
    run_dir, build, check, captions = _plan(tmp_path)
    run_stage(run_dir, build)
    manifest = run_dir / "shards" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"command"', '"command" ', 1))
    assert stale_reason(run_dir, build).startswith("output changed")


def test_marker_without_content_record_reruns(tmp_path):
    run_dir, build, check, captions = _plan(tmp_path)
    run_stage(run_dir, build)
    marker = run_dir / ".stages" / "build.json"
    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({"fingerprint": record["fingerprint"]}))  # as an older dftrain wrote it
    assert "older dftrain" in stale_reason(run_dir, build)
