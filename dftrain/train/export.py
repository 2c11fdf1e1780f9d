"""Checkpoint -> diffusers pipeline folder (safetensors) that StableDiffusionPipeline.from_pretrained loads.

The UNet is consolidated from the DeepSpeed checkpoint into fp32 (zero_to_fp32 for ZeRO 1-3,
the module weights for ZeRO 0), or from the per-rank EMA files with `ema=True`; every other
part (vae, text_encoder, tokenizer, scheduler, model_index.json, ...) is copied from the model
folder the run trained from.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch

from dftrain.errors import DftrainError
from dftrain.train import checkpoint as ckpt
from dftrain.train.models import default_resolution
from dftrain.train.safe_load import load_checkpoint_file, weights_only_loading

log = logging.getLogger("dftrain.train")

EXPORT_INFO = "dftrain_export.json"  # beside model_index.json: checkpoint, step, EMA, training resolution


def consolidated_unet_state(ckpt_dir: Path, tag: str, zero_stage: int) -> dict[str, torch.Tensor]:
    if zero_stage >= 1:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        with weights_only_loading():
            state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag)
    else:
        path = ckpt_dir / tag / "mp_rank_00_model_states.pt"
        if not path.is_file():
            raise DftrainError(f"{path} missing: incomplete checkpoint")
        state = load_checkpoint_file(path)["module"]
    return {k: v.float() for k, v in state.items()}


def ema_state(ckpt_dir: Path, tag: str, world_size: int) -> dict[str, torch.Tensor]:
    from dftrain.train.ema import consolidate_ema

    files = [ckpt.ema_file(ckpt_dir, tag, r) for r in range(world_size)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DftrainError(f"checkpoint {tag} has no EMA weights ({missing[0]} missing): export without --ema")
    return consolidate_ema(files)


def set_prediction_type(pipeline_dir: Path, prediction_type: str | None) -> None:
    """A run trained with --prediction-type X exports a scheduler that samples with X."""
    path = pipeline_dir / "scheduler" / "scheduler_config.json"
    if prediction_type is None or not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("prediction_type") != prediction_type:
        config["prediction_type"] = prediction_type
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def export_pipeline(
    checkpoint: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    ema: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `out` (a diffusers pipeline folder); returns its path.

    ema=None uses the EMA weights when the checkpoint has them.
    """
    from diffusers import UNet2DConditionModel

    ckpt_dir, tag = ckpt.resolve_checkpoint(checkpoint)
    meta = ckpt.read_meta(ckpt_dir, tag)
    model = Path(model or meta["model"])
    if not (model / "unet" / "config.json").is_file():
        raise DftrainError(f"model folder {model} has no unet/config.json: pass --model (the folder the run trained from)")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DftrainError(f"{out} exists and is not empty: choose another --out or pass --overwrite")
    use_ema = meta.get("ema", False) if ema is None else ema
    state = ema_state(ckpt_dir, tag, meta["world_size"]) if use_ema else consolidated_unet_state(ckpt_dir, tag, meta["zero_stage"])

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(model), subfolder="unet"))
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DftrainError(f"checkpoint {tag} does not match the UNet of {model}: {exc}") from exc

    tmp = out.with_name(f".{out.name}.tmp-{int(time.time())}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for entry in model.iterdir():
        if entry.name == "unet" or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, tmp / entry.name)
        else:
            shutil.copy2(entry, tmp / entry.name)
    unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)
    set_prediction_type(tmp, meta.get("config", {}).get("prediction_type"))
    # The resolution it trained at (generate samples at it by default); None in the config: the UNet's native size.
    vae_blocks = json.loads((model / "vae" / "config.json").read_text(encoding="utf-8"))["block_out_channels"]
    resolution = meta.get("config", {}).get("resolution") or default_resolution(unet, 2 ** (len(vae_blocks) - 1))
    (tmp / EXPORT_INFO).write_text(
        json.dumps({"checkpoint": str(ckpt_dir / tag), "ema": use_ema, "step": meta["step"],
                    "resolution": resolution}, indent=2),
        encoding="utf-8",
    )
    if out.exists():
        old = out.with_name(f".{out.name}.old-{int(time.time())}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    log.info("exported %s (%s weights) to %s", ckpt_dir / tag, "EMA" if use_ema else "trained", out)
    return out
