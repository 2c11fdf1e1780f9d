"""The embedded tiny Stable-Diffusion-shaped pipeline, built from config with no download.

    from dftrain.model import build_tiny_pipeline
    folder = build_tiny_pipeline("runs/tiny-model", seed=0)
    # diffusers.StableDiffusionPipeline.from_pretrained(folder) loads it as it loads SD 2.1

Components: UNet2DConditionModel (SD 2.x structure, ~1M parameters), AutoencoderKL
(4 latent channels, 64 px -> 16x16 latents, fitted on synthetic images and cached),
CLIPTextModel (2 layers, 77 positions) with an offline byte-level BPE CLIPTokenizer,
and a scaled-linear DDPMScheduler (epsilon or v-prediction).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from dftrain.errors import ConfigError
from dftrain.model.configs import (
    TINY_VAE_BLOCKS,
    scheduler_config,
    tiny_text_config,
    tiny_unet_config,
    vae_scale_factor,
)

log = logging.getLogger("dftrain.model")

DEFAULT_VAE_STEPS = 1000
MARKER_NAME = "dftrain_model.json"  # written into every folder this module builds


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a non-empty folder that this module did not build."""
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MARKER_NAME).is_file())):
        raise ConfigError(f"{out_dir} exists and is not a dftrain model folder; choose another --out or remove it")


def _install(staging: Path, out_dir: Path) -> None:
    """Move the finished build into place; an earlier build there is replaced only at the end."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


def build_tiny_pipeline(
    out_dir: str | os.PathLike,
    *,
    images: Iterable[Image.Image] | None = None,
    train_images: Iterable[Image.Image] | None = None,
    captions: Iterable[str] | None = None,
    seed: int = 0,
    resolution: int = 64,
    vae_steps: int = DEFAULT_VAE_STEPS,
    prediction_type: str = "epsilon",
    vocab_size: int = 2048,
) -> Path:
    """Build the tiny pipeline into `out_dir` (save_pretrained, safetensors) and return the path.

    images / train_images (same thing; either name): PIL images to fit the VAE on; default:
    synthetic scenes and objects for `seed`. captions: extra text for the tokenizer's merges.
    The fitted VAE is cached (dftrain.paths.cache_dir("tiny-vae", ...)), so a second build with
    the same settings skips the fit. Details land in `out_dir/dftrain_model.json`.
    """
    if images is not None and train_images is not None:
        raise ConfigError("pass the VAE's images as `images` or `train_images`, not both")
    images = images if images is not None else train_images
    factor = vae_scale_factor(TINY_VAE_BLOCKS)
    if resolution < 4 * factor or resolution % (factor * 2) != 0:
        raise ConfigError(f"resolution must be a multiple of {factor * 2} and >= {4 * factor}, got {resolution}")
    if vae_steps < 0:
        raise ConfigError(f"vae_steps must be >= 0, got {vae_steps}")
    try:
        scheduler_settings = scheduler_config(prediction_type)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    out_dir = Path(out_dir)
    _check_out_dir(out_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        vae_report = _build_into(staging, images=images, captions=captions, seed=seed, resolution=resolution,
                                 vae_steps=vae_steps, scheduler_settings=scheduler_settings, vocab_size=vocab_size)
        vocab = json.loads((staging / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
        marker = {
            "preset": "tiny",
            "seed": seed,
            "resolution": resolution,
            "prediction_type": prediction_type,
            "vocab_size": len(vocab),
            "vae": vae_report,
            "build_seconds": round(time.perf_counter() - start, 2),
        }
        (staging / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
        _install(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("tiny pipeline written to %s in %.1f s", out_dir, time.perf_counter() - start)
    return out_dir


def _build_into(staging: Path, *, images, captions, seed: int, resolution: int, vae_steps: int,
                scheduler_settings: dict, vocab_size: int) -> dict:
    """Make every component and save the pipeline into `staging`; returns the VAE report."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dftrain.model.tokenizer import build_tokenizer
    from dftrain.model.vae_cache import load_or_fit_tiny_vae
    from dftrain.synthetic import OBJECT_CLASS_NAMES, caption_corpus

    corpus = caption_corpus(seed) + list(captions or [])
    build_tokenizer(staging / "tokenizer-src", corpus, extra_words=OBJECT_CLASS_NAMES, vocab_size=vocab_size)
    tokenizer = CLIPTokenizer.from_pretrained(staging / "tokenizer-src")

    # Seeded initialisation without disturbing the caller's global torch RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(**tiny_text_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                                              tokenizer.pad_token_id))
        )
        torch.manual_seed(seed + 1)
        unet = UNet2DConditionModel(**tiny_unet_config(resolution, text_encoder.config.hidden_size))
        vae, vae_report = load_or_fit_tiny_vae(resolution, seed, vae_steps, images)
    scheduler = DDPMScheduler(**scheduler_settings)

    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(staging, safe_serialization=True)
    # Keep CLIP's plain vocab.json + merges.txt beside the tokenizer.json that transformers writes.
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(staging / "tokenizer-src" / name, staging / "tokenizer" / name)
    shutil.rmtree(staging / "tokenizer-src")
    return vae_report
