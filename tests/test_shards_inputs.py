"""Shard inputs: several folders, tars and list files, resolved by one resolver for every stage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from shards_helpers import write_dataset

from dftrain.fingerprint import shard_folder_sha256
from dftrain.shards import ShardError, iter_samples
from dftrain.shards.inputs import shard_set


@pytest.fixture
def two_folders(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    write_dataset(one, n=6, per_shard=4)  # shard-000000.tar (4), shard-000001.tar (2)
    samples = write_dataset(two, n=3, per_shard=4, bad={i: {"txt": f"other {i}"} for i in range(3)})
    assert samples[0]["txt"] == "other 0"
    return one, two


def test_two_folders_in_order_with_unique_names(two_folders):
    one, two = two_folders
    chosen = shard_set([one, two])
    assert chosen.folders == (one, two) and chosen.total_samples == 9
    assert chosen.paths == [one / "shard-000000.tar", one / "shard-000001.tar", two / "shard-000000.tar"]
    # The same tar name in two folders: each gets its source number, so mirrored outputs never collide.
    assert [s.name for s in chosen.shards] == ["0-shard-000000.tar", "0-shard-000001.tar", "1-shard-000000.tar"]
    texts = [s["txt"] for s in iter_samples(chosen, rank=0, world_size=1, decode=False)]
    assert texts[-3:] == ["other 0", "other 1", "other 2"] and len(texts) == 9
    # One folder: its own names, and the content digest every cache already used for it.
    single = shard_set(one)
    assert [s.name for s in single.shards] == ["shard-000000.tar", "shard-000001.tar"]
    assert single.sha256() == shard_folder_sha256(one) and single.single_folder == one
    assert chosen.sha256() != single.sha256()
    assert shard_set([two, one]).sha256() != chosen.sha256()  # the order is part of the data


def test_list_file_with_comments_relative_lines_and_a_tar(two_folders, tmp_path):
    one, two = two_folders
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    listing.write_text(f"# the training set\n\n../one   # first folder\n{two / 'shard-000000.tar'}\n")
    chosen = shard_set(listing)
    assert chosen.paths == [listing.parent / "../one" / "shard-000000.tar", listing.parent / "../one" /
                            "shard-000001.tar", two / "shard-000000.tar"]
    assert chosen.total_samples == 9
    # Content, not paths: the list gives the same digest as the same folders named directly.
    assert chosen.sha256() == shard_set([one, two]).sha256()


@pytest.mark.parametrize("line, message", [
    ("nowhere", "line 2: 'nowhere' is neither a shard folder nor a .tar file"),
    ("other.txt", "line 2: 'other.txt' is a list file"),
])
def test_a_bad_list_line_is_one_clear_error(two_folders, tmp_path, line, message):
    one, _ = two_folders
    listing = tmp_path / "train.txt"
    (tmp_path / "other.txt").write_text(f"{one}\n")
    listing.write_text(f"{one}\n{line}\n")
    with pytest.raises(ShardError, match=message):
        shard_set(listing)


def test_repeats_manifestless_folders_and_mixed_kinds_are_refused(two_folders, tmp_path):
    one, two = two_folders
    with pytest.raises(ShardError, match="is given twice"):
        shard_set([one, one])
    with pytest.raises(ShardError, match="is given twice"):
        shard_set([one, one / "shard-000001.tar"])
    copy = tmp_path / "copy"
    shutil.copytree(one, copy)
    with pytest.raises(ShardError, match=r"same content \(sha256\)"):
        shard_set([one, copy])
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(one / "shard-000000.tar", bare / "x.tar")
    with pytest.raises(ShardError, match="no manifest.json in"):
        shard_set([one, bare])
    with pytest.raises(ShardError, match="has no manifest.json beside it: adopt"):
        shard_set(bare / "x.tar")
    objects = tmp_path / "objects"
    from dftrain.shards import ShardWriter
    with ShardWriter(objects, samples_per_shard=4, kind="objects") as writer:
        writer.write({"__key__": "o1", "jpg": (one / "shard-000000.tar").read_bytes()[:10], "cls": 0})
    with pytest.raises(ShardError, match="different kinds"):
        shard_set([one, objects])


def test_generalize_two_folders_into_one_and_reuse(two_folders, tmp_path):
    from generalize_helpers import ScriptedBackend

    from dftrain.generalize.stage import generalize_shards
    from dftrain.shards import Manifest

    one, two = two_folders
    backend = ScriptedBackend()
    report = generalize_shards([one, two], tmp_path / "general", backend_instance=backend, score="off",
                               faithful=False, rank=0, world_size=1, progress=False)
    assert report.manifest_written and report.samples_out == 9
    manifest = Manifest.load(tmp_path / "general")
    assert [s.name for s in manifest.shards] == ["0-shard-000000.tar", "0-shard-000001.tar", "1-shard-000000.tar"]
    assert manifest.extra["source"] == [str(one), str(two)]
    again = generalize_shards([one, two], tmp_path / "general", backend_instance=backend, score="off",
                              faithful=False, rank=0, world_size=1, progress=False)
    assert again.written == [] and len(again.skipped_done) == 3  # reuse keyed on the inputs' sha256


def test_evaluate_accepts_two_folders(tmp_path):
    from evaluate_helpers import scene_images, write_generations, write_train_shards

    from dftrain.evaluate.run import EvaluateOptions, evaluate

    images = scene_images(6, seed=1, size=48)
    write_train_shards(tmp_path / "a", images[:4], samples_per_shard=2)
    keys_b = write_train_shards(tmp_path / "b", images[4:], samples_per_shard=2)
    write_generations(tmp_path / "gen", [images[5]], [keys_b[1]])
    report = evaluate(tmp_path / "gen", [tmp_path / "a", tmp_path / "b"], tmp_path / "eval",
                      EvaluateOptions(no_cache=True, reference_n=4))
    assert report["n_train"] == 6 and report["train_dir"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert report["sim_mean"] > 0.99  # the generation is training image 5, found in the second folder


def test_train_config_accepts_folders_and_list_files(two_folders, tmp_path):
    from dftrain.errors import ConfigError
    from dftrain.train.config import build_config
    from dftrain.train.data import shard_paths

    one, two = two_folders
    listing = tmp_path / "train.txt"
    listing.write_text(f"{one}\n{two}\n")
    cfg = build_config(None, {"shards": [str(listing)], "model": "m", "out": "o"})
    assert cfg.shards == [str(listing)] and len(shard_paths(cfg.shards)) == 3
    assert build_config(None, {"shards": str(one)}).shards == [str(one)]  # YAML's `shards: DIR`
    with pytest.raises(ConfigError, match="is given twice"):
        shard_paths([str(one), str(listing)])


def _dftrain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dftrain", *args], capture_output=True, text=True, timeout=120)


def test_cli_info_validate_and_every_stage_take_repeated_inputs(two_folders, tmp_path):
    one, two = two_folders
    listing = tmp_path / "train.txt"
    listing.write_text(f"{one}\n{two}\n")
    info = _dftrain("shard", "info", str(listing))
    assert info.returncode == 0 and "together: 2 folders, 9 samples in 3 shards" in info.stdout
    check = _dftrain("shard", "validate", str(one), str(two))
    assert check.returncode == 0 and check.stdout.count("samples") == 2 and check.stdout.endswith("ok\n")
    listing.write_text(f"{one}\nmissing-folder\n")
    bad = _dftrain("shard", "info", str(listing))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"error: {listing} line 2: 'missing-folder' is neither a shard "
                                               "folder nor a .tar file"]


STAGES = [("train", "--shards"), ("precompute", "--shards"), ("generalize", "--shards"), ("generate", "--shards"),
          ("score", "--shards"), ("detect", "--shards"), ("evaluate", "--train-shards")]


@pytest.mark.parametrize("stage, flag", STAGES)
def test_every_stage_takes_the_one_repeatable_shards_option(stage, flag):
    import typer

    from dftrain.cli import app
    from dftrain.shards.inputs import SHARDS_HELP

    command = typer.main.get_command(app).commands[stage]
    option = next(p for p in command.params if flag in p.opts)
    assert option.multiple and SHARDS_HELP in option.help


def test_cli_train_refuses_a_bad_list_before_loading_anything(two_folders, tmp_path):
    one, _ = two_folders
    result = _dftrain("train", "--model", str(tmp_path), "--shards", str(one), "--shards", str(one),
                      "--out", str(tmp_path / "run"), "--fusion", "none")
    assert result.returncode != 0 and "is given twice" in result.stderr and "Traceback" not in result.stderr
    assert not Path(tmp_path / "run").exists()
