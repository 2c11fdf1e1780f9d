"""Architecture configs: the tiny embedded preset and the published SD 2.1 shapes.

The tiny preset keeps Stable Diffusion 2.x's structure (cross-attention UNet with
linear projections, KL autoencoder with 4 latent channels, CLIP text encoder,
scaled-linear DDPM schedule) at a size that trains at 64 px on a CPU.
"""

from __future__ import annotations

# 64 px images -> 16x16 latents (two downsamplings in the VAE: factor 4). Narrow blocks keep the
# VAE fit at build time short; 4 norm groups (not 16) let per-channel colour pass the GroupNorms,
# which made the fit reach ~1 dB more PSNR in the same steps (20.5 vs 19.3 dB at 600 vs 1200 steps).
TINY_VAE_BLOCKS = (16, 32, 32)
TINY_VAE_NORM_GROUPS = 4
TINY_TEXT_WIDTH = 64


def tiny_unet_config(resolution: int = 64, cross_attention_dim: int = TINY_TEXT_WIDTH) -> dict:
    latent = resolution // vae_scale_factor(TINY_VAE_BLOCKS)
    return {
        "sample_size": latent,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        # As in SD 2.x's config, attention_head_dim is the number of heads per block (diffusers naming).
        "attention_head_dim": (2, 4),
        "cross_attention_dim": cross_attention_dim,
        "use_linear_projection": True,
        "upcast_attention": False,
        "norm_num_groups": 32,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
        "center_input_sample": False,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
    }


def tiny_vae_config(resolution: int = 64) -> dict:
    blocks = TINY_VAE_BLOCKS
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * len(blocks),
        "up_block_types": ("UpDecoderBlock2D",) * len(blocks),
        "block_out_channels": blocks,
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": TINY_VAE_NORM_GROUPS,
        "act_fn": "silu",
        "sample_size": resolution,
        "scaling_factor": 1.0,  # replaced after the fit by 1 / std of the latents
    }


def tiny_text_config(vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> dict:
    return {
        "vocab_size": vocab_size,
        "hidden_size": TINY_TEXT_WIDTH,
        "intermediate_size": 4 * TINY_TEXT_WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",  # SD 2.x's OpenCLIP text encoder uses gelu
        "projection_dim": TINY_TEXT_WIDTH,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
    }


def scheduler_config(prediction_type: str = "epsilon") -> dict:
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": prediction_type,
        "clip_sample": False,
        "steps_offset": 1,
        "timestep_spacing": "leading",
    }


def vae_scale_factor(block_out_channels) -> int:
    """Pixel-to-latent downsampling of an AutoencoderKL (as diffusers pipelines compute it)."""
    return 2 ** (len(block_out_channels) - 1)


# -- published Stable Diffusion 2.1 shapes (for benchmarks with random weights) -----------------


def sd21_unet_config(base: bool = False) -> dict:
    """UNet2DConditionModel config of stabilityai/stable-diffusion-2-1 (768 px, v-prediction);
    `base=True` gives stable-diffusion-2-1-base (512 px). ~866M parameters."""
    return {
        "sample_size": 64 if base else 96,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "attention_head_dim": [5, 10, 20, 20],
        "cross_attention_dim": 1024,
        "use_linear_projection": True,
        "upcast_attention": not base,
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
        "center_input_sample": False,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "dual_cross_attention": False,
        "only_cross_attention": False,
        "num_class_embeds": None,
    }


def sd21_vae_config() -> dict:
    """AutoencoderKL config of Stable Diffusion 2.x (factor 8, 4 latent channels)."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "sample_size": 768,
        "scaling_factor": 0.18215,
    }


def sd21_text_config() -> dict:
    """CLIPTextModel config of SD 2.x's OpenCLIP ViT-H/14 text tower (23 layers used)."""
    return {
        "vocab_size": 49408,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 23,
        "num_attention_heads": 16,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "projection_dim": 512,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
