"""Rank and world size of this process, and how work is split across ranks.

Every stage splits work by shard: rank r of w takes items r, r + w, r + 2w, ...
The rank comes from explicit flags, else the launcher's environment
(torchrun / deepspeed: RANK, WORLD_SIZE; SLURM: SLURM_PROCID, SLURM_NTASKS),
else a single process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def rank_info(rank: int | None = None, world_size: int | None = None) -> RankInfo:
    """Resolve rank and world size: flags first, then RANK/WORLD_SIZE, then SLURM, then (0, 1)."""
    if rank is None and world_size is None:
        for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
            env_rank, env_world = _env_int(rank_var), _env_int(world_var)
            if env_rank is not None and env_world is not None:
                rank, world_size = env_rank, env_world
                break
    rank = 0 if rank is None else rank
    world_size = 1 if world_size is None else world_size
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return RankInfo(rank, world_size)


def split_for_rank(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items rank `rank` of `world_size` takes: items[rank::world_size]."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} of world size {world_size}")
    return list(items[rank::world_size])


def all_reduce_numbers(dist, values: Sequence[float], *, op, device) -> list[float]:
    """All-reduce a few numbers across ranks, as float64 on `device`.

    DeepSpeed's process group on CUDA is NCCL-only: a tensor left on the CPU there fails with
    "No backend type associated with device type cpu". Pass the device the engine trains on.
    """
    import torch

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=op)
    return _read_back(tensor)


def _read_back(tensor) -> list[float]:
    return tensor.cpu().tolist()


def split_local_rank(argv: list[str]) -> tuple[list[str], str | None]:
    """Remove `--local_rank=N` / `--local-rank N` from argv; return (rest, N)."""
    rest, value, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(("--local_rank=", "--local-rank=")):
            value = arg.split("=", 1)[1]
        elif arg in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            value = argv[i + 1]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return rest, value
