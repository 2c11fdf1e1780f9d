"""Content-addressed reuse in generalize: input checksum, model identity and settings decide, never paths."""

from __future__ import annotations

import pytest
from generalize_helpers import ScriptedBackend, build_tiny_lm, read_folder, write_input_shards

from dftrain.errors import DftrainError, MissingDependencyError
from dftrain.generalize.receipts import finalize, model_identity
from dftrain.generalize.stage import generalize_shards

CAPTIONS = [["a red car on a street", "a cat on a sofa"], ["Mount Fuji in Japan, 2019"], ["a dog"]]


def run(in_dir, out_dir, backend, **kwargs):
    kwargs.setdefault("score", "off")
    kwargs.setdefault("progress", False)
    kwargs.setdefault("faithful", False)  # reuse is tested here; the meaning check has its own tests
    return generalize_shards(in_dir, out_dir, backend="embedded", backend_instance=backend, rank=kwargs.pop("rank", 0),
                             world_size=kwargs.pop("world_size", 1), **kwargs)


def echo(caption, strict):
    return caption.split(",")[0]


def test_unchanged_input_and_model_reuse_every_shard(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", CAPTIONS)
    assert len(run(in_dir, tmp_path / "out", ScriptedBackend(echo)).written) == 3
    backend = ScriptedBackend(echo)
    report = run(in_dir, tmp_path / "out", backend)
    assert report.written == [] and len(report.skipped_done) == 3 and backend.calls == []


def test_input_rebuilt_with_other_content_redoes_exactly_the_changed_shard(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", CAPTIONS)
    run(in_dir, tmp_path / "out", ScriptedBackend(echo))
    # Rebuilt in place with one caption changed, same length: the tar keeps its size and name.
    changed = [CAPTIONS[0], ["Mount Fuji in Japan, 2020"], CAPTIONS[2]]
    before = (in_dir / "shard-000001.tar").stat().st_size
    write_input_shards(in_dir, changed)
    assert (in_dir / "shard-000001.tar").stat().st_size == before
    backend = ScriptedBackend(echo)
    report = run(in_dir, tmp_path / "out", backend)
    assert report.written == ["shard-000001.tar"] and report.manifest_written
    asked = {caption for call in backend.calls for caption in call}
    assert backend.calls[0] == ["Mount Fuji in Japan, 2020"] and not asked & {"a red car on a street", "a dog"}
    out = read_folder(tmp_path / "out")
    assert out["000000002"]["json"]["orig_caption"] == "Mount Fuji in Japan, 2020"
    assert out["000000000"]["json"]["orig_caption"] == "a red car on a street"  # kept from the first run


def test_model_change_redoes_every_shard(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", CAPTIONS)
    run(in_dir, tmp_path / "out", ScriptedBackend(echo))

    class Newer(ScriptedBackend):
        model_id = "scripted-v2"

    report = run(in_dir, tmp_path / "out", Newer(lambda caption, strict: "a thing"))
    assert len(report.written) == 3
    assert {s["txt"] for s in read_folder(tmp_path / "out").values()} == {"a thing"}


def test_finalize_refuses_shards_made_from_an_older_input(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", CAPTIONS)
    out = tmp_path / "out"
    for rank in (0, 1):
        run(in_dir, out, ScriptedBackend(echo), rank=rank, world_size=2, dedup="shard")
    write_input_shards(in_dir, [CAPTIONS[0], ["another mountain"], CAPTIONS[2]])  # rank 1's shard changes
    report = run(in_dir, out, ScriptedBackend(echo), rank=0, world_size=2, dedup="shard")
    assert report.written == [] and not report.manifest_written and not (out / "manifest.json").exists()
    with pytest.raises(DftrainError, match="older version"):
        finalize(in_dir, out, require_all=True)
    assert run(in_dir, out, ScriptedBackend(echo), rank=1, world_size=2, dedup="shard").manifest_written


def test_weights_identity_follows_content_not_path(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x01" * 2_000_000)
    (folder / "config.json").write_text("{}")
    first = model_identity(folder)
    moved = folder.rename(tmp_path / "elsewhere")
    assert model_identity(moved) == first  # the same weights under another path
    with open(moved / "model.safetensors", "r+b") as handle:  # same size, one byte changed
        handle.seek(1_000_000)
        handle.write(b"\x02")
    assert model_identity(moved) != first
    assert model_identity(stand_in="scripted:v1") == "stand-in:scripted:v1"
    with pytest.raises(MissingDependencyError, match="not found"):
        model_identity(tmp_path / "missing")


def test_real_model_weights_changed_redo_and_unchanged_reuse_without_loading(tmp_path):
    in_dir = write_input_shards(tmp_path / "in", CAPTIONS)
    model = build_tiny_lm(tmp_path / "lm", seed=0)
    options = dict(backend="transformers", model=str(model), score="off", progress=False, rank=0, world_size=1,
                   fallback="rule,original")
    assert len(generalize_shards(in_dir, tmp_path / "out", **options).written) == 3
    again = generalize_shards(in_dir, tmp_path / "out", **options)
    assert again.written == [] and again.seconds < 1.0  # no model was loaded
    build_tiny_lm(model, seed=1)  # other weights in the same folder
    assert len(generalize_shards(in_dir, tmp_path / "out", **options).written) == 3
