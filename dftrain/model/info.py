"""Describe a diffusers pipeline folder without loading its weights (safetensors headers only)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dftrain.errors import DftrainError

COMPONENTS = ("unet", "vae", "text_encoder")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DftrainError(f"cannot read {path}: {exc}") from exc


def count_parameters(folder: Path) -> int:
    """Sum of tensor sizes over the safetensors files in `folder` (read from their headers)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise DftrainError(f"no .safetensors weights in {folder}")
    total = 0
    for path in files:
        with safe_open(str(path), framework="np") as handle:
            for name in handle.keys():
                total += math.prod(handle.get_slice(name).get_shape())
    return total


def describe_model(folder: str | Path) -> dict:
    """Parameter counts per component, resolution, latent size, prediction type, tokenizer size."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise DftrainError(f"{folder} is not a diffusers pipeline folder (no model_index.json)")
    unet = _read_json(folder / "unet" / "config.json")
    vae = _read_json(folder / "vae" / "config.json")
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    info = {
        "folder": str(folder),
        "parameters": {name: count_parameters(folder / name) for name in COMPONENTS if (folder / name).is_dir()},
        "resolution": int(unet["sample_size"]) * factor,
        "latent_size": int(unet["sample_size"]),
        "latent_channels": int(vae["latent_channels"]),
        "vae_scale_factor": factor,
        "vae_scaling_factor": vae.get("scaling_factor"),
        "cross_attention_dim": unet.get("cross_attention_dim"),
        "prediction_type": scheduler.get("prediction_type", "epsilon"),
        "scheduler": scheduler.get("_class_name"),
    }
    vocab = folder / "tokenizer" / "vocab.json"
    if vocab.is_file():
        info["tokenizer_vocab"] = len(_read_json(vocab))
    marker = folder / "dftrain_model.json"
    if marker.is_file():
        info["dftrain"] = _read_json(marker)
    return info
