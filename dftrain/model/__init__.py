"""Model presets: the embedded tiny Stable-Diffusion-shaped pipeline and the SD 2.1 architecture configs.

    from dftrain.model import build_tiny_pipeline, sd21_unet_config, describe_model
"""

from dftrain.model.configs import (
    scheduler_config,
    sd21_text_config,
    sd21_unet_config,
    sd21_vae_config,
    tiny_text_config,
    tiny_unet_config,
    tiny_vae_config,
)
from dftrain.model.info import describe_model


def build_tiny_pipeline(*args, **kwargs):
    """See dftrain.model.tiny.build_tiny_pipeline (imported lazily: it pulls in torch and diffusers)."""
    from dftrain.model.tiny import build_tiny_pipeline as build

    return build(*args, **kwargs)


__all__ = [
    "build_tiny_pipeline",
    "describe_model",
    "scheduler_config",
    "sd21_text_config",
    "sd21_unet_config",
    "sd21_vae_config",
    "tiny_text_config",
    "tiny_unet_config",
    "tiny_vae_config",
]
