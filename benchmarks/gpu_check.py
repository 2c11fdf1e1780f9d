"""GPU check: DeepSpeed bf16 training steps of the SD 2.1 UNet architecture (random weights,
built from its published config; nothing downloads) at 256 px.

    python -m benchmarks.gpu_check                 # on a CUDA machine: SD 2.1 shapes, 256 px, bf16
    python -m benchmarks.gpu_check --tiny          # anywhere (CPU): the tiny preset shapes, 2 steps

Modes, same process, one after another (each a fresh DeepSpeed ZeRO-2 engine on one device):
  sdpa_onthefly      VAE encode + text encoder + UNet step, attention = torch SDPA
  xformers_onthefly  the same with xformers attention (skipped when xformers is not importable)
  sdpa_precomputed   UNet step only, latents and text states already encoded (dftrain precompute)
Reported per mode: samples/s (after warm-up steps), median step time, peak GPU memory.
Writes benchmarks/results/gpu_check.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def build_models(tiny: bool):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dftrain.model import configs

    if tiny:
        text_cfg = configs.tiny_text_config(vocab_size=1000, bos_token_id=998, eos_token_id=999, pad_token_id=999)
        unet_cfg, vae_cfg = configs.tiny_unet_config(64, text_cfg["hidden_size"]), configs.tiny_vae_config(64)
        resolution = 64
    else:
        text_cfg, unet_cfg, vae_cfg = configs.sd21_text_config(), configs.sd21_unet_config(base=True), configs.sd21_vae_config()
        resolution = 256
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    scheduler = DDPMScheduler.from_config(configs.scheduler_config("epsilon"))
    return unet, vae, text_encoder, scheduler, resolution, text_cfg["vocab_size"]


def ds_config(batch: int, bf16: bool, on_cuda: bool) -> dict:
    from dftrain.train.config import TrainConfig
    from dftrain.train.trainer import fill_ds_config

    cfg = TrainConfig(micro_batch_size=batch, grad_accum=1, lr=1e-5, precision="bf16" if bf16 else "fp32")
    return fill_ds_config({"zero_optimization": {"stage": 2}}, cfg, world_size=1, on_cuda=on_cuda)


def run_mode(mode: str, args, device) -> dict:
    import deepspeed

    from dftrain.train.models import set_attention

    unet, vae, text_encoder, scheduler, resolution, vocab = build_models(args.tiny)
    attention = "xformers" if mode.startswith("xformers") else "sdpa"
    set_attention(unet, attention)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    frozen_dtype = torch.bfloat16 if (args.bf16 and device.type == "cuda") else torch.float32
    vae.requires_grad_(False).eval().to(device, frozen_dtype)
    text_encoder.requires_grad_(False).eval().to(device, frozen_dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    engine, _, _, _ = deepspeed.initialize(
        model=unet, model_parameters=[p for p in unet.parameters() if p.requires_grad],
        config=ds_config(args.batch, args.bf16, device.type == "cuda"),
    )
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)
    b = args.batch
    pixels = torch.rand(b, 3, resolution, resolution, generator=g).mul(2).sub(1).to(device, frozen_dtype)
    ids = torch.randint(0, vocab - 2, (b, 77), generator=g).to(device)
    with torch.no_grad():
        cached_latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
        cached_states = text_encoder(ids)[0]
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        if mode.endswith("precomputed"):
            latents, states = cached_latents, cached_states
        else:
            with torch.no_grad():
                latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
                states = text_encoder(ids)[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), device=device)
        noisy = scheduler.add_noise(latents.float(), noise.float(), t)
        pred = engine(noisy.to(dtype), t, encoder_hidden_states=states.to(dtype)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        engine.backward(loss)
        engine.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    result = {"samples_per_s": round(b / step_s, 2), "median_step_s": round(step_s, 4), "loss": round(loss.item(), 4),
              "resolution": resolution, "batch": b, "attention": attention,
              "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1)}
    if device.type == "cuda":
        result["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del engine, unet, vae, text_encoder
    return result


def xformers_available() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        import xformers  # noqa: F401
        import xformers.ops  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        return False, f"not importable: {exc}"
    return True, ""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, CPU-friendly")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="fp32 instead of bf16")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_check.json"))
    args = parser.parse_args(argv)
    on_cuda = torch.cuda.is_available()
    args.batch = args.batch or (2 if args.tiny else 16)
    args.steps = args.steps or (2 if args.tiny else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    if not on_cuda and not args.tiny:
        print("no CUDA device: the SD 2.1 check needs a GPU (use --tiny to exercise the code on CPU)")
    from dftrain.train.environment import device_for_local_rank, ensure_launch_env

    ensure_launch_env()
    import deepspeed

    deepspeed.init_distributed(verbose=False)
    device = device_for_local_rank()
    report = {"device": torch.cuda.get_device_name(0) if on_cuda else "cpu", "torch": torch.__version__,
              "precision": "bf16" if args.bf16 else "fp32", "tiny": args.tiny, "modes": {}}
    ok, why = xformers_available()
    for mode in ("sdpa_onthefly", "xformers_onthefly", "sdpa_precomputed"):
        if mode.startswith("xformers") and not ok:
            report["modes"][mode] = {"skipped": f"xformers unavailable ({why})"}
            continue
        try:
            report["modes"][mode] = run_mode(mode, args, device)
        except Exception as exc:  # noqa: BLE001 - one failing mode must not hide the others
            report["modes"][mode] = {"error": f"{type(exc).__name__}: {exc}"}
        print(mode, report["modes"][mode], flush=True)
    sdpa, pre = report["modes"].get("sdpa_onthefly", {}), report["modes"].get("sdpa_precomputed", {})
    if "samples_per_s" in sdpa and "samples_per_s" in pre:
        report["precomputed_speedup"] = round(pre["samples_per_s"] / sdpa["samples_per_s"], 3)
    xf = report["modes"].get("xformers_onthefly", {})
    if "samples_per_s" in sdpa and "samples_per_s" in xf:
        report["xformers_vs_sdpa"] = round(xf["samples_per_s"] / sdpa["samples_per_s"], 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(sys.argv[1:])
