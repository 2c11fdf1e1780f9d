"""Load the pipeline parts from a diffusers folder: the trained UNet, and the frozen VAE,
text encoder and tokenizer (kept outside DeepSpeed, so ZeRO-3 never partitions them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dftrain.errors import ConfigError, MissingDependencyError

log = logging.getLogger("dftrain.train")


@dataclass
class Components:
    unet: Any
    noise_scheduler: Any
    vae: Any | None  # None when training from precomputed latents
    text_encoder: Any | None
    tokenizer: Any | None
    vae_scale_factor: int
    scaling_factor: float


def set_attention(unet, kind: str) -> None:
    if kind == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
    elif kind == "xformers":
        if not torch.cuda.is_available():
            raise ConfigError("--attention xformers needs a CUDA GPU: use --attention sdpa")
        try:
            import xformers  # noqa: F401
        except Exception as exc:  # an import of a CUDA build can fail in many ways
            raise MissingDependencyError(f"--attention xformers: xformers is not importable ({exc}); pip install xformers") from exc
        unet.enable_xformers_memory_efficient_attention()
    else:
        raise ConfigError(f"unknown attention {kind!r}")


def load_text_encoder(model: str | Path, device, dtype):
    from transformers import AutoTokenizer, CLIPTextModel

    tokenizer = AutoTokenizer.from_pretrained(str(model), subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(str(model), subfolder="text_encoder", torch_dtype=dtype)
    text_encoder.requires_grad_(False).eval().to(device)
    return tokenizer, text_encoder


def load_vae(model: str | Path, device, dtype):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(model), subfolder="vae", torch_dtype=dtype)
    return vae.requires_grad_(False).eval().to(device)


def load_components(cfg, *, precomputed: bool, device, frozen_dtype, stored_text: bool | None = None) -> Components:
    """stored_text: the latents hold text-encoder states (default: whenever precomputed)."""
    stored_text = precomputed if stored_text is None else stored_text
    from diffusers import DDPMScheduler, UNet2DConditionModel

    model = Path(cfg.model)
    unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet", torch_dtype=torch.float32)
    set_attention(unet, cfg.attention)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    noise_scheduler = DDPMScheduler.from_pretrained(str(model), subfolder="scheduler")
    if cfg.prediction_type is not None:
        noise_scheduler.register_to_config(prediction_type=cfg.prediction_type)

    from diffusers import AutoencoderKL

    vae_config = AutoencoderKL.load_config(str(model), subfolder="vae")
    vae_scale_factor = 2 ** (len(vae_config.get("block_out_channels", [0])) - 1)
    scaling_factor = float(vae_config.get("scaling_factor", 0.18215))
    vae = None if precomputed else load_vae(model, device, frozen_dtype)
    tokenizer, text_encoder = (None, None)
    if not stored_text or cfg.fusion in ("caption", "dual") or cfg.caption_replace:
        # precomputed runs still encode the object phrases " with k" once at start-up
        tokenizer, text_encoder = load_text_encoder(model, device, frozen_dtype)
    return Components(unet, noise_scheduler, vae, text_encoder, tokenizer, vae_scale_factor, scaling_factor)


def default_resolution(unet, vae_scale_factor: int) -> int:
    size = unet.config.sample_size
    size = size[0] if isinstance(size, list | tuple) else size
    return int(size) * vae_scale_factor


@torch.no_grad()
def encode_token_ids(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    return text_encoder(input_ids.to(text_encoder.device))[0]


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
