"""A run folder that holds a run is never silently rewound or mixed; resume keeps the options it trained with."""

from __future__ import annotations

import pytest
from train_helpers import in_process_env, quick_config, read_metrics, shared_assets

from dftrain.errors import DftrainError
from dftrain.train import checkpoint as ckpt
from dftrain.train.run_folder import changed_options


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def short(assets, out, **overrides):
    return quick_config(assets, out, **{"steps": 2, "checkpoint_every": 2, "export": False, "zero_stage": 0,
                                        **overrides})


def test_the_same_command_again_is_refused_and_loses_nothing(assets, tmp_path, monkeypatch):
    from dftrain.train.trainer import train

    in_process_env(monkeypatch)
    out = tmp_path / "run"
    train(short(assets, out))
    before = ((out / "metrics.jsonl").read_bytes(), ckpt.latest_complete(ckpt.checkpoints_dir(out)))
    with pytest.raises(DftrainError, match="already holds a run .*--resume auto.*--overwrite"):
        train(short(assets, out))
    assert ((out / "metrics.jsonl").read_bytes(), ckpt.latest_complete(ckpt.checkpoints_dir(out))) == before

    train(short(assets, out, overwrite=True, steps=1, checkpoint_every=1))  # starts over, one run's metrics
    assert [r["step"] for r in read_metrics(out)] == [1]
    assert ckpt.latest_complete(ckpt.checkpoints_dir(out)) == ckpt.tag_for_step(1)


def test_resume_with_other_training_options_is_refused_unless_allowed(assets, tmp_path, monkeypatch):
    from dftrain.train.trainer import train

    in_process_env(monkeypatch)
    out = tmp_path / "run"
    train(short(assets, out))
    with pytest.raises(DftrainError, match=r"options differ .*lr 0\.001 -> 0\.0002.*--allow-changes"):
        train(short(assets, out, resume="auto", steps=3, lr=2e-4))
    summary = train(short(assets, out, resume="auto", steps=3, log_every=1, keep_checkpoints=3))  # may change
    assert summary["step"] == 3
    summary = train(short(assets, out, resume="auto", steps=4, lr=2e-4, allow_changes=True))
    assert summary["step"] == 4


def test_changed_options_compares_paths_by_where_they_point(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = {"model": str(tmp_path / "m"), "lr": 1e-3, "steps": 10, "fusion": "dual"}
    assert changed_options(saved, {"model": "m", "lr": 1e-3, "steps": 20, "fusion": "dual"}) == []
    assert changed_options(saved, {"model": "other", "lr": 1e-3, "steps": 10, "fusion": "none"}) == [
        "fusion 'dual' -> 'none'", f"model {str(tmp_path / 'm')!r} -> 'other'"]


def test_a_checkpoint_from_before_the_object_options_ran_as_their_old_behaviour():
    """Its config lacks them: it drew the first name, no flip and the mean, so today's defaults differ."""
    old = {"lr": 1e-3}
    now = {"lr": 1e-3, "object_label": "synonym", "object_flip": True, "object_latent": "sample"}
    assert changed_options(old, now) == ["object_flip False -> True", "object_label 'first' -> 'synonym'",
                                         "object_latent 'mean' -> 'sample'"]
    assert changed_options(old, {"lr": 1e-3, "object_label": "first", "object_flip": False,
                                 "object_latent": "mean"}) == []
    assert changed_options(now, now) == []
