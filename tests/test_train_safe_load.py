"""Checkpoints from elsewhere cannot run code: export and --resume load .pt files with weights_only."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
import torch
from process_helpers import run_group
from train_helpers import REPO, cpu_env, in_process_env, quick_config, shared_assets

from dftrain.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


class RunsCode:
    """What a crafted checkpoint holds: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def trained_run(assets, out, monkeypatch, zero_stage):
    from dftrain.train.trainer import train

    in_process_env(monkeypatch)
    train(quick_config(assets, out, steps=2, checkpoint_every=2, export=False, zero_stage=zero_stage))
    return ckpt.resolve_checkpoint(out)


def tamper(ckpt_dir, tag, file_name, marker):
    path = ckpt_dir / tag / file_name
    assert path.is_file(), sorted(p.name for p in (ckpt_dir / tag).iterdir())
    torch.save({"module": RunsCode(marker), "optimizer_state_dict": RunsCode(marker)}, path)


def dftrain(*args):
    return run_group([sys.executable, "-m", "dftrain", *args], env=cpu_env(), cwd=REPO, timeout=300)


def assert_refused(result, marker):
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and "refused to load" in errors[0] and "posix.system" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not marker.exists(), "the checkpoint's code ran"


def test_real_checkpoints_of_every_zero_stage_still_export(assets, tmp_path, monkeypatch):
    from dftrain.train.export import consolidated_unet_state

    for stage in (0, 1, 3):
        ckpt_dir, tag = trained_run(assets, tmp_path / f"z{stage}", monkeypatch, stage)
        state = consolidated_unet_state(ckpt_dir, tag, stage)
        assert state and all(v.dtype == torch.float32 for v in state.values())


@pytest.mark.parametrize("stage,file_name", [(0, "mp_rank_00_model_states.pt"),
                                             (1, "zero_pp_rank_0_mp_rank_00_optim_states.pt")])
def test_export_refuses_a_checkpoint_that_would_run_code(assets, tmp_path, monkeypatch, stage, file_name):
    ckpt_dir, tag = trained_run(assets, tmp_path / "run", monkeypatch, stage)
    marker = tmp_path / "PWNED"
    tamper(ckpt_dir, tag, file_name, marker)
    result = dftrain("export", str(tmp_path / "run"), "--out", str(tmp_path / "pipe"))
    assert_refused(result, marker)


def test_resume_refuses_a_checkpoint_that_would_run_code(assets, tmp_path, monkeypatch):
    ckpt_dir, tag = trained_run(assets, tmp_path / "elsewhere", monkeypatch, 0)
    marker = tmp_path / "PWNED"
    tamper(ckpt_dir, tag, "mp_rank_00_model_states.pt", marker)
    out = tmp_path / "mine"
    shutil.rmtree(out, ignore_errors=True)
    result = dftrain("train", "--model", str(assets["model"]), "--shards", str(assets["shards"]),
                     "--objects", str(assets["objects"]), "--out", str(out), "--zero-stage", "0",
                     "--precision", "fp32", "--steps", "3", "--micro-batch-size", "2", "--no-progress",
                     "--resume", str(tmp_path / "elsewhere"), "--allow-changes")  # other options than the checkpoint's
    assert_refused(result, marker)
