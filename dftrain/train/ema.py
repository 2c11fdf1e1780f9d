"""Exponential moving average of the UNet that is correct under every ZeRO stage.

Each rank keeps, in fp32, the EMA of the parameter data it holds locally: the full tensor
at ZeRO 0-2 (parameters are replicated), the rank's own partition (`param.ds_tensor`) at
ZeRO-3. Nothing is gathered during training. At export the per-rank partitions are
concatenated in rank order (ZeRO-3 pads the flattened parameter and splits it evenly).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dftrain.files import atomic_path


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up of the decay so early averages are not dominated by the initial weights."""
    return min(decay, (1.0 + step) / (10.0 + step))


def ema_update_(shadow: torch.Tensor, value: torch.Tensor, decay: float) -> None:
    """shadow <- decay * shadow + (1 - decay) * value, in place."""
    shadow.mul_(decay).add_(value.detach().to(shadow.dtype), alpha=1.0 - decay)


def local_data(param: torch.nn.Parameter) -> torch.Tensor:
    """The part of a parameter this rank holds: the ZeRO-3 partition, else the tensor itself."""
    partition = getattr(param, "ds_tensor", None)
    return partition.view(-1) if partition is not None else param.data


def full_shape(param: torch.nn.Parameter) -> list[int]:
    return list(getattr(param, "ds_shape", param.shape))


def assemble_partitions(chunks: list[torch.Tensor], shape: list[int]) -> torch.Tensor:
    """Rebuild a ZeRO-3 parameter from its rank-ordered flat partitions (the last is padded)."""
    numel = 1
    for dim in shape:
        numel *= dim
    flat = torch.cat([c.reshape(-1) for c in chunks])
    if flat.numel() < numel:
        raise ValueError(f"partitions hold {flat.numel()} values, parameter needs {numel}")
    return flat[:numel].view(shape).clone()


class LocalEMA:
    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.partitioned = any(hasattr(p, "ds_tensor") for _, p in self.params)
        self.shadow = {n: local_data(p).detach().float().clone() for n, p in self.params}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        decay = ema_decay_at(self.updates, self.decay)
        for name, param in self.params:
            ema_update_(self.shadow[name], local_data(param), decay)
        self.updates += 1

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        meta = {
            "partitioned": self.partitioned,
            "updates": self.updates,
            "shapes": {n: full_shape(p) for n, p in self.params},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({n: t.contiguous() for n, t in self.shadow.items()}, str(tmp), metadata={"dftrain": json.dumps(meta)})

    def load(self, path: Path) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        for name, shadow in self.shadow.items():
            shadow.copy_(tensors[name])
        self.updates = read_ema_meta(path)["updates"]


def read_ema_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["dftrain"])


def consolidate_ema(rank_files: list[Path]) -> dict[str, torch.Tensor]:
    """Full fp32 EMA state dict from the per-rank EMA files of one checkpoint."""
    from safetensors.torch import load_file

    meta = read_ema_meta(rank_files[0])
    if not meta["partitioned"]:
        return load_file(str(rank_files[0]))
    per_rank = [load_file(str(p)) for p in rank_files]
    return {name: assemble_partitions([r[name] for r in per_rank], shape) for name, shape in meta["shapes"].items()}
