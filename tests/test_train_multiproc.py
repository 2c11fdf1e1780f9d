"""Two ranks over gloo (torchrun) at ZeRO 2 and ZeRO 3; SIGKILL of a rank mid-run and resume; SIGTERM while
decoding workers run, then an exact resume against in-process decoding."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch
from process_helpers import kill_group, start_group
from train_helpers import (
    REPO,
    cpu_env,
    read_metrics,
    run,
    shared_assets,
    torchrun_cmd,
    unet_weights,
)

pytestmark = pytest.mark.multiproc


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def train_args(assets, out, *extra: str) -> list[str]:
    return [
        "--model", str(assets["model"]), "--shards", str(assets["shards"]), "--objects", str(assets["objects"]),
        "--out", str(out), "--micro-batch-size", "2", "--lr", "1e-3", "--warmup-steps", "0",
        "--log-every", "1", "--no-progress", "--shuffle-buffer", "4", *extra,
    ]


def mean(values):
    return sum(values) / len(values)


def assert_loss_decreased(records, n=3):
    losses = [r["loss"] for r in records]
    assert mean(losses[-n:]) < mean(losses[:n]), losses


def test_two_ranks_zero2_bf16_loss_decreases_and_export_generates(assets, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "z2"
    proc = run(torchrun_cmd(2, *train_args(assets, out, "--zero-stage", "2", "--precision", "bf16", "--steps", "10",
                                           "--checkpoint-every", "5", "--fusion", "dual", "--gradient-checkpointing")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 11))
    assert_loss_decreased(records)
    assert "world_size               2" in proc.stdout  # the start-up summary
    pipe = StableDiffusionPipeline.from_pretrained(str(out / "pipeline"))
    image = pipe("a blue square", num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)
    # the exported UNet is the trained one (fp32 master weights of the last checkpoint)
    step, trained = unet_weights(out)
    exported = pipe.unet.state_dict()
    assert step == 10 and max((exported[k] - trained[k]).abs().max().item() for k in trained) == 0


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "dftrain" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    return None


def test_zero3_sigkill_of_a_rank_then_resume(assets, tmp_path):
    """ZeRO-3, 2 ranks: kill rank 1 mid-run; the last complete checkpoint loads, exports and resumes;
    loss decreases over the whole run; the EMA (decay 0) export equals the trained weights."""
    from dftrain.train import checkpoint as ckpt
    from dftrain.train.export import export_pipeline

    out = tmp_path / "z3"
    args = train_args(assets, out, "--zero-stage", "3", "--precision", "fp32", "--checkpoint-every", "2",
                      "--ema", "--ema-decay", "0", "--fusion", "dual", "--caption-fusion", "tail_add")
    launcher = start_group(torchrun_cmd(2, *args, "--steps", "400"), env=cpu_env(), cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            tag = ckpt.latest_complete(ckpt.checkpoints_dir(out)) if (out / "checkpoints").is_dir() else None
            if tag and ckpt.step_of_tag(tag) >= 4:
                break
            assert launcher.poll() is None, launcher.stderr.read()[-3000:]
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint at step >= 4 in time")
        pid = rank_pid(launcher, 1)
        assert pid is not None
        import os

        os.kill(pid, signal.SIGKILL)
        launcher.wait(timeout=120)
    finally:
        kill_group(launcher)
    assert launcher.returncode != 0
    ckpt_dir, tag = ckpt.resolve_checkpoint(out)
    killed_at = ckpt.step_of_tag(tag)
    assert 4 <= killed_at < 400
    # the last complete checkpoint consolidates and exports on its own
    exported = export_pipeline(out, tmp_path / "after_kill", ema=False)
    assert (exported / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    target = killed_at + 4
    proc = run(torchrun_cmd(2, *args, "--steps", str(target), "--resume", "auto"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resumed from {ckpt_dir / tag} at step {killed_at}" in proc.stdout
    records = read_metrics(out)
    assert records[-1]["step"] == target
    assert_loss_decreased(records)
    # EMA with decay 0 is the current weights: the partition-wise EMA reassembles exactly
    ema_pipe = export_pipeline(out, tmp_path / "ema", ema=True)
    from diffusers import UNet2DConditionModel

    ema_unet = UNet2DConditionModel.from_pretrained(str(ema_pipe), subfolder="unet").state_dict()
    step, trained = unet_weights(out)
    assert step == target
    assert max((ema_unet[k] - trained[k]).abs().max().item() for k in trained) <= 1e-6


def losses_and_weights(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir)], unet_weights(run_dir)


def test_sigterm_with_decoding_workers_then_exact_resume(assets, tmp_path):
    """SIGTERM to torchrun (SLURM preemption) while each rank decodes in a worker process (torchrun signals
    the rank's whole process group, workers included): every rank saves at the same step, then stops.
    Resumed, still with workers, it ends on the losses and weights of one straight run decoding in the
    rank's own process (--num-workers 0): same batches with and without workers, exact resume (fp32)."""
    from dftrain.train import checkpoint as ckpt

    out = tmp_path / "term"
    args = train_args(assets, out, "--zero-stage", "2", "--precision", "fp32", "--checkpoint-every", "1000",
                      "--fusion", "latent", "--num-workers", "1")
    extensions = tmp_path / "torch_extensions"  # where DeepSpeed would JIT-build its ops
    launcher = start_group(torchrun_cmd(2, *args, "--steps", "1000"), env=cpu_env(TORCH_EXTENSIONS_DIR=str(extensions)),
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not ((out / "metrics.jsonl").is_file() and len(read_metrics(out)) >= 2):
            assert launcher.poll() is None, launcher.stdout.read()[-3000:]
            time.sleep(0.05)
        launcher.send_signal(signal.SIGTERM)
        output, _ = launcher.communicate(timeout=120)
    finally:
        kill_group(launcher)
    assert "stopped by SIGTERM at step" in output, output[-3000:]
    assert "decoding images in 1 worker processes" in output
    ckpt_dir, tag = ckpt.resolve_checkpoint(out)
    stopped_at = ckpt.step_of_tag(tag)
    assert 2 <= stopped_at < 1000  # saved at the stop, not at a --checkpoint-every multiple
    assert not (out / "pipeline").exists()  # an interrupted run does not export
    # CPU ranks do not compile DeepSpeed's shared-memory all-reduce (a killed compile's lock hung later runs)
    assert not list(extensions.rglob("deepspeed_shm_comm*")), sorted(extensions.rglob("*"))

    target = stopped_at + 2
    resumed = run(torchrun_cmd(2, *args, "--steps", str(target), "--resume", "auto", "--no-export"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {ckpt_dir / tag} at step {stopped_at}" in resumed.stdout
    straight = tmp_path / "inline"
    inline_args = train_args(assets, straight, "--zero-stage", "2", "--precision", "fp32", "--checkpoint-every", "1000",
                             "--fusion", "latent", "--num-workers", "0", "--steps", str(target), "--no-export")
    proc = run(torchrun_cmd(2, *inline_args))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (losses, (step, weights)), (inline_losses, (inline_step, inline_weights)) = map(losses_and_weights, (out, straight))
    assert [s for s, _ in losses] == list(range(1, target + 1))
    assert losses == inline_losses
    assert step == inline_step == target
    assert max((weights[k] - inline_weights[k]).abs().max().item() for k in inline_weights) == 0
