"""Tiny-model and synthetic-data benchmarks (one CPU thread: per-core figures).

    .venv/bin/python -m benchmarks.bench_model [--quick]

1. UNet training step (forward + backward + AdamW) of the tiny preset at 64 px (16x16 latents),
   batch 4 and 8, side by side with a baseline: the same UNet widths run in pixel space
   (64x64x3, no VAE), i.e. what the latent autoencoder saves.
2. UNet sampling cost: one denoising step with classifier-free guidance (batch doubled), per image.
3. VAE fit step at the preset's fit settings (batch 16, 32 px crops) and VAE encode/decode throughput.
4. Synthetic data generation: training samples/s and object-bank samples/s (JPEG bytes included).
Writes benchmarks/results/model.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_step_fn(unet, batch: int, channels: int, size: int, context_dim: int):
    import torch

    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x = torch.randn(batch, channels, size, size)
    context = torch.randn(batch, 77, context_dim)
    timesteps = torch.randint(0, 1000, (batch,))

    def step():
        loss = torch.nn.functional.mse_loss(unet(x, timesteps, context).sample, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main(quick: bool = False) -> dict:
    import torch
    from diffusers import UNet2DConditionModel

    from dftrain.model.configs import tiny_unet_config
    from dftrain.model.vae_cache import FIT_HYPERPARAMS, new_tiny_vae
    from dftrain.synthetic import synthetic_object_samples, synthetic_train_samples

    torch.set_num_threads(1)
    torch.manual_seed(0)
    repeats = 3 if quick else 10
    config = tiny_unet_config(64)
    unet = UNet2DConditionModel(**config)
    pixel_config = {**config, "sample_size": 64, "in_channels": 3, "out_channels": 3}
    pixel_unet = UNet2DConditionModel(**pixel_config)
    result: dict = {
        "threads": 1,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "unet_train_step_s": {},
        "pixel_space_baseline_train_step_s": {},
        "latent_vs_pixel_speedup": {},
    }
    for batch in (4, 8):
        latent = _median_seconds(_train_step_fn(unet, batch, 4, config["sample_size"], config["cross_attention_dim"]), repeats)
        pixel = _median_seconds(_train_step_fn(pixel_unet, batch, 3, 64, config["cross_attention_dim"]),
                                max(2, repeats // 3), warmup=1)
        result["unet_train_step_s"][str(batch)] = round(latent, 4)
        result["pixel_space_baseline_train_step_s"][str(batch)] = round(pixel, 4)
        result["latent_vs_pixel_speedup"][str(batch)] = round(pixel / latent, 1)

    unet.eval()
    with torch.no_grad():
        x = torch.randn(8, 4, 16, 16)
        context = torch.randn(8, 77, config["cross_attention_dim"])
        t = torch.full((8,), 500)
        per_step = _median_seconds(lambda: unet(x, t, context), repeats)
    result["sampling_step_s_per_image_cfg"] = round(per_step / 4, 5)  # 4 images, guidance doubles the batch

    vae = new_tiny_vae(64, seed=0)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    crops = torch.randn(FIT_HYPERPARAMS["batch_size"], 3, FIT_HYPERPARAMS["crop"], FIT_HYPERPARAMS["crop"])

    def vae_step():
        posterior = vae.encode(crops).latent_dist
        loss = (vae.decode(posterior.sample()).sample - crops).abs().mean() + 1e-6 * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result["vae_fit_step_s"] = round(_median_seconds(vae_step, repeats), 4)
    vae.eval()
    images = torch.randn(16, 3, 64, 64)
    with torch.no_grad():
        encode = _median_seconds(lambda: vae.encode(images).latent_dist.mean, repeats)
        latents = vae.encode(images).latent_dist.mean
        decode = _median_seconds(lambda: vae.decode(latents).sample, repeats)
    result["vae_encode_images_per_s"] = round(16 / encode, 1)
    result["vae_decode_images_per_s"] = round(16 / decode, 1)

    n = 100 if quick else 300
    start = time.perf_counter()
    count = sum(1 for _ in synthetic_train_samples(n, 64, 0.1, 0))
    result["synthetic_train_samples_per_s"] = round(count / (time.perf_counter() - start), 1)
    start = time.perf_counter()
    count = sum(1 for _ in synthetic_object_samples(5 if quick else 20, 64, 0))
    result["synthetic_object_samples_per_s"] = round(count / (time.perf_counter() - start), 1)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "model.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
