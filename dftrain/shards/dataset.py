"""ShardDataset: the reader as a torch IterableDataset (split by rank, then by DataLoader worker)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from dftrain.distributed import rank_info
from dftrain.shards.limits import Limits
from dftrain.shards.reader import SkipStats, iter_worker_samples, resolve_shards, select_shards


class ShardDataset(torch.utils.data.IterableDataset):
    """Samples of this rank's shards; each DataLoader worker reads its own subset of them.

    `transform(sample) -> item` runs in the worker (e.g. crop and turn the PIL image into a tensor).
    `stats` counts what this process read: with num_workers > 0 each worker process has its own
    copy, so look at the logged skips (logger "dftrain.shards") there.
    Call `set_epoch(e)` before each pass when epochs=1 to get a new shuffle order per epoch.
    """

    def __init__(
        self,
        dir_or_paths: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        decode: bool = True,
        strict: bool = False,
        require: Sequence[str] = ("jpg", "txt"),
        stats: SkipStats | None = None,
        epochs: int | None = 1,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        limits: Limits | None = None,
    ):
        super().__init__()
        info = rank_info(rank, world_size)
        self.rank, self.world_size = info.rank, info.world_size
        self.shards = select_shards(resolve_shards(dir_or_paths), self.rank, self.world_size)
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.decode = decode
        self.strict = strict
        self.require = tuple(require)
        self.stats = stats if stats is not None else SkipStats()
        self.epochs = epochs
        self.transform = transform
        self.limits = limits  # None: each worker takes this process's (inherited DFTRAIN_MAX_* variables)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        worker_info = torch.utils.data.get_worker_info()
        worker, num_workers = (0, 1) if worker_info is None else (worker_info.id, worker_info.num_workers)
        refs = select_shards(self.shards, 0, 1, worker, num_workers)
        samples = iter_worker_samples(
            refs,
            seed=self.seed,
            rank=self.rank,
            worker=worker,
            shuffle_buffer=self.shuffle_buffer,
            decode=self.decode,
            strict=self.strict,
            require=self.require,
            stats=self.stats,
            epochs=self.epochs,
            first_epoch=self.epoch,
            limits=self.limits,
        )
        if self.transform is None:
            return samples
        return (self.transform(sample) for sample in samples)
