"""Fit the tiny AutoencoderKL on images so its reconstructions are recognisable.

Pure-ish training loop: L1 + MSE reconstruction and a small KL term, Adam with a
cosine learning-rate decay, random crops (the VAE is convolutional, so crops cost
less and still teach it the whole image's statistics) and horizontal flips.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

log = logging.getLogger("dftrain.model")


@dataclass
class VaeFitResult:
    steps: int
    final_loss: float
    seconds: float


def images_to_tensor(images: Iterable[Image.Image], resolution: int) -> torch.Tensor:
    """PIL images -> float tensor (N, 3, R, R) in [-1, 1]."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), Image.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.float32))
    if not arrays:
        raise ValueError("no images to fit the VAE on")
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch / 127.5 - 1.0


def _random_crops(images: torch.Tensor, batch: int, crop: int, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = images.shape
    index = torch.randint(0, n, (batch,), generator=generator)
    ys = torch.randint(0, h - crop + 1, (batch,), generator=generator)
    xs = torch.randint(0, w - crop + 1, (batch,), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    crops = []
    for i, y, x, flip in zip(index.tolist(), ys.tolist(), xs.tolist(), flips.tolist(), strict=True):
        patch = images[i, :, y : y + crop, x : x + crop]
        crops.append(patch.flip(-1) if flip else patch)
    return torch.stack(crops)


def fit_vae(vae, images: torch.Tensor, *, steps: int, batch_size: int = 16, crop: int = 32, lr: float = 1e-3,
            kl_weight: float = 1e-6, seed: int = 0, log_every: int = 0) -> VaeFitResult:
    """Train `vae` in place on `images` ((N, 3, R, R) in [-1, 1]) for `steps` steps."""
    import time

    generator = torch.Generator().manual_seed(seed)
    crop = min(crop, images.shape[-1])
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))),
    )
    vae.train()
    start = time.perf_counter()
    loss_value = float("nan")
    for step in range(steps):
        batch = _random_crops(images, batch_size, crop, generator)
        posterior = vae.encode(batch).latent_dist
        # Sampling z needs torch's global RNG; seed it per step so the fit is reproducible.
        latents = posterior.sample(generator=torch.Generator().manual_seed(seed * 1_000_003 + step))
        reconstruction = vae.decode(latents).sample
        error = reconstruction - batch
        loss = error.abs().mean() + error.pow(2).mean() + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_value = float(loss.detach())
        if log_every and (step % log_every == 0 or step == steps - 1):
            log.info("VAE fit step %d/%d loss %.4f", step + 1, steps, loss_value)
    vae.eval()
    return VaeFitResult(steps=steps, final_loss=loss_value, seconds=time.perf_counter() - start)


@torch.no_grad()
def latent_std(vae, images: torch.Tensor, batch_size: int = 32) -> float:
    """Std of the posterior means over `images`: SD sets scaling_factor = 1 / this."""
    means = [vae.encode(images[i : i + batch_size]).latent_dist.mean for i in range(0, len(images), batch_size)]
    return float(torch.cat(means).std())


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Deterministic reconstruction (posterior mean), clamped to [-1, 1]."""
    outputs = [vae.decode(vae.encode(images[i : i + batch_size]).latent_dist.mean).sample
               for i in range(0, len(images), batch_size)]
    return torch.cat(outputs).clamp(-1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of tensors in [-1, 1] (peak-to-peak 2)."""
    mse = float((a - b).pow(2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def mean_colour_baseline(images: torch.Tensor) -> torch.Tensor:
    """Each image replaced by its mean colour: what a VAE that learned nothing spatial would give."""
    return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
