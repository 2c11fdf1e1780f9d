"""GPU check: the real `dftrain train` (torchrun, DeepSpeed ZeRO-2, bf16) on an SD 2.1-architecture
pipeline folder built here with random weights (nothing downloads), at 256 px.

    python -m benchmarks.gpu_check           # a CUDA machine: SD 2.1 architecture, 256 px, bf16, every GPU
    python -m benchmarks.gpu_check --tiny    # anywhere (CPU): the tiny pipeline at 32 px, fp32, 1 rank

Steps, each a `dftrain` command as a user runs it (logs in WORK/logs/):
  1. the pipeline folder: the tiny pipeline's tokenizer and scheduler, with the SD 2.1 UNet, VAE and
     OpenCLIP-H-shaped text encoder (random weights, from their published configs);
  2. `dftrain shard synthetic` (training images + object bank) and `dftrain precompute` (latents);
  3. `dftrain train`, one run per mode: sdpa on the fly (VAE + text encoder in the step), sdpa from
     precomputed latents, xformers on the fly (when importable); 2 ranks when two GPUs exist.
Reported per mode (from the run's metrics.jsonl, the first window left out as warm-up): samples/s
(all ranks and per GPU), step time, peak memory of the largest rank. Writes
benchmarks/results/gpu_check.json (or --out). Sized for under 8 minutes on one H200, set-up included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def build_pipeline(folder: Path, tiny: bool) -> Path:
    """A diffusers pipeline folder: SD 2.1's UNet, VAE and text encoder (random) or the tiny pipeline."""
    from dftrain.model import build_tiny_pipeline

    if (folder / "model_index.json").is_file():
        return folder
    staging = folder.with_name(folder.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    build_tiny_pipeline(staging, resolution=32 if tiny else 64, vae_steps=0)
    if not tiny:
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from dftrain.model import configs

        torch.manual_seed(0)
        for part, model in (("unet", UNet2DConditionModel(**configs.sd21_unet_config(base=True))),
                            ("vae", AutoencoderKL(**configs.sd21_vae_config())),
                            ("text_encoder", CLIPTextModel(CLIPTextConfig(**configs.sd21_text_config())))):
            shutil.rmtree(staging / part)
            model.save_pretrained(staging / part, safe_serialization=True)
        (staging / "dftrain_model.json").unlink(missing_ok=True)  # it describes the tiny parts replaced here
    staging.rename(folder)
    return folder


def dftrain(args: list[str], log: Path, *, ranks: int = 1, env: dict | None = None, timeout: float = 900) -> float:
    """Run one dftrain command (torchrun with `ranks` > 1); its output goes to `log`. Returns seconds."""
    launch = ([PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m", "dftrain"]
              if ranks > 1 else [PYTHON, "-m", "dftrain"])
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.call([*launch, *args], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                               env={**os.environ, **(env or {})}, timeout=timeout)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"dftrain {' '.join(args[:1])} failed (exit {code}); log {log}:\n{tail}")
    return time.perf_counter() - start


def mode_figures(run: Path, ranks: int, seconds: float) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steady = records[1:] or records  # the first window holds compilation and warm-up
    rate = statistics.mean(r["samples_per_s"] for r in steady)
    return {"samples_per_s": round(rate, 2), "samples_per_s_per_gpu": round(rate / ranks, 2),
            "step_time_s": round(statistics.median(r["step_time_s"] for r in steady), 4),
            "peak_memory_gib_max_rank": round(max(r["memory_bytes_max_rank"] for r in records) / 2**30, 2),
            "final_loss": round(records[-1]["loss"], 4), "ranks": ranks, "wall_s_with_startup": round(seconds, 1)}


def xformers_importable() -> str | None:
    """None when xformers can be used here, else why not."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import xformers.ops  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        return f"not importable: {exc}"
    return None


def main(argv: list[str] | None = None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny pipeline on CPU (checks the script)")
    parser.add_argument("--work", default=None, help="work folder (default: /tmp/dftrain-gpu-check[-tiny])")
    parser.add_argument("--batch", type=int, default=None, help="micro-batch per rank (default 16; tiny 2)")
    parser.add_argument("--steps", type=int, default=None, help="steps per mode (default 30; tiny 4)")
    parser.add_argument("--images", type=int, default=None, help="training images (default 512; tiny 16)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_check.json"))
    args = parser.parse_args(argv)
    on_cuda = torch.cuda.is_available()
    if not on_cuda and not args.tiny:
        raise SystemExit("no CUDA device: the SD 2.1 check needs a GPU (--tiny checks the script on CPU)")
    tiny = args.tiny
    batch, steps = args.batch or (2 if tiny else 16), args.steps or (4 if tiny else 30)
    n_images, resolution = args.images or (16 if tiny else 512), 32 if tiny else 256
    ranks = min(2, torch.cuda.device_count()) if on_cuda else 1
    work = Path(args.work or f"/tmp/dftrain-gpu-check{'-tiny' if tiny else ''}")
    logs = work / "logs"
    report: dict = {"device": torch.cuda.get_device_name(0) if on_cuda else "cpu", "torch": torch.__version__,
                    "architecture": "tiny" if tiny else "sd2.1 (random weights)", "resolution": resolution,
                    "micro_batch_per_rank": batch, "steps": steps, "ranks": ranks, "setup_s": {}, "modes": {}}
    started = time.perf_counter()
    model = build_pipeline(work / "model", tiny)
    report["setup_s"]["pipeline"] = round(time.perf_counter() - started, 1)
    data = work / "data"
    if not (data / "objects" / "manifest.json").is_file():
        report["setup_s"]["shards"] = round(dftrain(
            ["shard", "synthetic", "--out", str(data), "--n", str(n_images), "--size", str(resolution),
             "--objects-per-class", "4", "--overwrite"], logs / "shards.log"), 1)
    if not (work / "latents-objects" / "manifest.json").is_file():
        report["setup_s"]["precompute"] = round(dftrain(
            ["precompute", "--model", str(model), "--shards", str(data / "train"), "--out", str(work / "latents"),
             "--objects", str(data / "objects"), "--objects-out", str(work / "latents-objects"),
             "--resolution", str(resolution)], logs / "precompute.log"), 1)
    modes = {"sdpa_onthefly": ("sdpa", data / "train", data / "objects"),
             "sdpa_precomputed": ("sdpa", work / "latents", work / "latents-objects"),
             "xformers_onthefly": ("xformers", data / "train", data / "objects")}
    for mode, (attention, shards, objects) in modes.items():
        if attention == "xformers" and (why := xformers_importable()) is not None:
            report["modes"][mode] = {"skipped": f"xformers {why}"}
            continue
        run = work / "runs" / mode
        train_args = ["train", "--model", str(model), "--shards", str(shards), "--objects", str(objects),
                      "--out", str(run), "--overwrite", "--fusion", "dual", "--steps", str(steps),
                      "--micro-batch-size", str(batch), "--lr", "1e-5", "--warmup-steps", "0",
                      "--zero-stage", "2", "--precision", "bf16" if on_cuda else "fp32", "--attention", attention,
                      "--resolution", str(resolution), "--log-every", str(max(1, steps // 5)),
                      "--checkpoint-every", str(10**9), "--keep-checkpoints", "1", "--no-export", "--no-progress"]
        try:
            seconds = dftrain(train_args, logs / f"{mode}.log", ranks=ranks, env={"OMP_NUM_THREADS": "4" if on_cuda else "1"})
            report["modes"][mode] = mode_figures(run, ranks, seconds)
        except Exception as exc:  # noqa: BLE001 - one failing mode must not hide the others
            report["modes"][mode] = {"error": str(exc)}
        print(mode, json.dumps(report["modes"][mode]), flush=True)
    figures = {m: r.get("samples_per_s") for m, r in report["modes"].items()}
    if figures.get("sdpa_onthefly") and figures.get("sdpa_precomputed"):
        report["precomputed_vs_onthefly"] = round(figures["sdpa_precomputed"] / figures["sdpa_onthefly"], 3)
    if figures.get("sdpa_onthefly") and figures.get("xformers_onthefly"):
        report["xformers_vs_sdpa"] = round(figures["xformers_onthefly"] / figures["sdpa_onthefly"], 3)
    report["total_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
