"""The tiny VAE, fitted once per (config, seed, steps, data) and cached as safetensors.

Cache layout: cache_dir("tiny-vae", <key>)/vae/ (diffusers save_pretrained) and
fit.json (how it was made and how well it reconstructs). A fit is written to a
temporary folder and renamed, so an interrupted fit never looks cached.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from dftrain.model.configs import tiny_vae_config
from dftrain.paths import cache_dir

log = logging.getLogger("dftrain.model")

# Bump when the fit procedure changes, so old cached VAEs are not reused.
VAE_FIT_VERSION = 1
FIT_HYPERPARAMS = {"batch_size": 16, "crop": 32, "lr": 2e-3, "kl_weight": 1e-6, "logvar_init": -6.0}
# Held-out images (another seed) measure reconstruction against a mean-colour baseline.
_HOLDOUT_SEED_OFFSET = 10_007


def default_fit_images(seed: int, resolution: int, n_scenes: int = 192, objects_per_class: int = 6) -> list[Image.Image]:
    """Unique synthetic scenes and objects (no duplicates) to fit the VAE on."""
    from dftrain.synthetic import synthetic_object_samples, synthetic_train_samples

    samples = list(synthetic_train_samples(n_scenes, resolution, 0.0, seed))
    samples += list(synthetic_object_samples(objects_per_class, resolution, seed))
    return [Image.open(io.BytesIO(s["jpg"])).convert("RGB") for s in samples]


def _images_digest(images: list[Image.Image]) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(image.tobytes())
    return digest.hexdigest()


def cache_key(resolution: int, seed: int, steps: int, data_id: str) -> str:
    spec = {
        "version": VAE_FIT_VERSION,
        "config": tiny_vae_config(resolution),
        "fit": FIT_HYPERPARAMS,
        "seed": seed,
        "steps": steps,
        "data": data_id,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=list).encode()).hexdigest()[:20]


def new_tiny_vae(resolution: int, seed: int):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**tiny_vae_config(resolution))
    with torch.no_grad():
        # Start with a small posterior std, so sampling noise does not drown the signal early in the fit.
        vae.quant_conv.bias[vae.config.latent_channels :] = FIT_HYPERPARAMS["logvar_init"]
    return vae


def fit_tiny_vae(resolution: int, seed: int, steps: int, images: list[Image.Image]) -> tuple[object, dict]:
    """A fresh tiny VAE trained on `images`; returns (vae, report) with scaling_factor set."""
    from dftrain.model.vae_fit import (
        fit_vae,
        images_to_tensor,
        latent_std,
        mean_colour_baseline,
        psnr,
        reconstruct,
    )
    from dftrain.synthetic import synthetic_train_samples

    vae = new_tiny_vae(resolution, seed)
    train = images_to_tensor(images, resolution)
    params = {k: v for k, v in FIT_HYPERPARAMS.items() if k != "logvar_init"}
    result = fit_vae(vae, train, steps=steps, seed=seed, log_every=100, **params)
    std = latent_std(vae, train)
    vae.register_to_config(scaling_factor=1.0 / std)
    holdout = images_to_tensor(
        [Image.open(io.BytesIO(s["jpg"])) for s in synthetic_train_samples(32, resolution, 0.0, seed + _HOLDOUT_SEED_OFFSET)],
        resolution,
    )
    report = {
        "steps": steps,
        "fit_seconds": round(result.seconds, 2),
        "final_loss": result.final_loss,
        "latent_std": std,
        "scaling_factor": 1.0 / std,
        "holdout_psnr_db": psnr(reconstruct(vae, holdout), holdout),
        "holdout_mean_colour_psnr_db": psnr(mean_colour_baseline(holdout), holdout),
        "train_images": len(images),
    }
    return vae, report


def load_or_fit_tiny_vae(resolution: int, seed: int, steps: int,
                         images: Iterable[Image.Image] | None = None) -> tuple[object, dict]:
    """The cached fitted VAE for these settings, fitting (and caching) it first if needed.

    Returns (vae, report); report["cache_hit"] tells which happened, report["cache_dir"] where it lives.
    """
    from diffusers import AutoencoderKL

    if images is None:
        data_id = f"synthetic-default-{resolution}"
        image_list = None
    else:
        image_list = [image.convert("RGB") for image in images]
        data_id = "images-" + _images_digest(image_list)
    key = cache_key(resolution, seed, steps, data_id)
    root = cache_dir("tiny-vae")
    folder = root / key
    report_path = folder / "fit.json"
    if report_path.is_file():
        # low_cpu_mem_usage=False: the default asks for `accelerate` and warns when it is missing.
        vae = AutoencoderKL.from_pretrained(folder / "vae", low_cpu_mem_usage=False)
        report = json.loads(report_path.read_text())
        log.info("tiny VAE from cache %s", folder)
        return vae, {**report, "cache_hit": True, "cache_dir": str(folder)}

    if image_list is None:
        image_list = default_fit_images(seed, resolution)
    log.info("fitting the tiny VAE: %d steps on %d images (cached afterwards in %s)", steps, len(image_list), folder)
    start = time.perf_counter()
    vae, report = fit_tiny_vae(resolution, seed, steps, image_list)
    report = {**report, "key": key, "data": data_id, "seed": seed, "total_seconds": round(time.perf_counter() - start, 2)}

    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        vae.save_pretrained(staging / "vae", safe_serialization=True)
        (staging / "fit.json").write_text(json.dumps(report, indent=2) + "\n")
        if report_path.is_file():  # another process cached the same fit meanwhile: keep theirs
            shutil.rmtree(staging)
        else:
            if folder.exists():  # a leftover without fit.json: incomplete, replace it
                shutil.rmtree(folder)
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return vae, {**report, "cache_hit": False, "cache_dir": str(folder)}
