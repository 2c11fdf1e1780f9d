"""The one shard reader every stage uses.

Shards are split by rank (shard i -> rank i % world_size), then by DataLoader worker
(the rank's shard j -> worker j % num_workers). Samples pass an optional shuffle buffer (raw bytes,
so it stays small), then are checked and decoded. A bad sample (corrupt or truncated tar,
undecodable image, missing or non-UTF-8 caption, unsafe key, a member, image or caption over the
limits of dftrain.shards.limits, ...) is skipped, counted in SkipStats and logged with its key; with
strict=True the first one raises ShardError instead.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dftrain.distributed import rank_info, split_for_rank
from dftrain.shards.limits import Limits, current_limits
from dftrain.shards.manifest import MANIFEST_NAME, Manifest, ShardError
from dftrain.shards.samples import SampleProblem, decode_sample, key_problem
from dftrain.shards.tario import DuplicateKey, RawSample, TarDamage, iter_tar

log = logging.getLogger("dftrain.shards")

# Keep at most this many (key, reason) pairs in memory; the counts stay exact beyond it.
MAX_LISTED_PROBLEMS = 10_000


@dataclass
class SkipStats:
    """What the reader yielded and what it skipped: reason -> count, and the (key, reason) pairs."""

    yielded: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def add(self, key: str, reason: str, count: int = 1) -> None:
        self.skipped[reason] += count
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append((key, reason))

    def merge(self, other: SkipStats) -> None:
        self.yielded += other.yielded
        self.skipped.update(other.skipped)
        room = MAX_LISTED_PROBLEMS - len(self.problems)
        self.problems.extend(other.problems[: max(room, 0)])

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.yielded} samples, none skipped"
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items()))
        return f"{self.yielded} samples, {self.total_skipped} skipped ({reasons})"


@dataclass(frozen=True)
class ShardRef:
    """A tar to read and, when a manifest lists it, how many samples it should hold."""

    path: Path
    expected_samples: int | None = None


def resolve_shards(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[ShardRef]:
    """A shard folder (its manifest, in order), a single .tar, a list of folders / tars, or a ShardSet.

    Stages resolve what the user gave with dftrain.shards.inputs.shard_set (list files, repeats, kinds)
    and pass the ShardSet here; a bare .tar without a manifest is read only by a stage's own code
    (one tar at a time)."""
    from dftrain.shards.inputs import LIST_SUFFIX, ShardSet, shard_set

    if isinstance(source, ShardSet):
        return [ShardRef(m.path, m.info.samples) for m in source.members]
    if isinstance(source, str | os.PathLike) and Path(source).suffix.lower() == LIST_SUFFIX:
        return resolve_shards(shard_set(source))
    if isinstance(source, str | os.PathLike):
        sources = [source]
    else:
        sources = list(source)
    refs: list[ShardRef] = []
    manifests: dict[Path, Manifest | None] = {}
    for item in sources:
        path = Path(item)
        if path.is_dir():
            manifest = Manifest.load(path)
            refs.extend(ShardRef(path / s.name, s.samples) for s in manifest.shards)
        elif path.suffix == ".tar":
            folder = path.parent
            if folder not in manifests:
                manifests[folder] = Manifest.load(folder) if (folder / MANIFEST_NAME).is_file() else None
            manifest = manifests[folder]
            expected = None
            if manifest is not None:
                expected = next((s.samples for s in manifest.shards if s.name == path.name), None)
            refs.append(ShardRef(path, expected))
        else:
            raise ShardError(f"{path}: neither a shard folder nor a .tar file")
    return refs


def select_shards(shards: Sequence[Any], rank: int, world_size: int, worker: int = 0, num_workers: int = 1) -> list:
    """Shard i -> rank i % world_size; inside the rank, shard j -> worker j % num_workers."""
    if not 0 <= worker < num_workers:
        raise ValueError(f"invalid worker {worker} of {num_workers}")
    return split_for_rank(split_for_rank(shards, rank, world_size), worker, num_workers)


def _report(stats: SkipStats, strict: bool, shard: Path, key: str, reason: str, detail: str, count: int = 1) -> None:
    key = key if key.isprintable() else repr(key)  # a key with control characters must not garble the log
    message = f"{shard.name}: sample {key}: {reason}" + (f" ({detail})" if detail else "")
    if strict:
        raise ShardError(f"strict mode: {message} [shard {shard}]")
    log.warning("skipped %s%s", message, f" [{count} samples]" if count > 1 else "")
    stats.add(key, reason, count)


def _raw_samples(ref: ShardRef, stats: SkipStats, strict: bool, limits: Limits) -> Iterator[RawSample]:
    """Raw samples of one tar; damage, duplicate and unsafe keys and members over the limits are reported,
    the good samples around them kept."""
    if not ref.path.is_file():
        lost = ref.expected_samples or 1
        _report(stats, strict, ref.path, ref.path.name, "missing shard", f"file not found; {lost} sample(s)", lost)
        return
    seen = 0
    for event in iter_tar(ref.path, limits):
        if isinstance(event, RawSample):
            seen += 1
            unsafe = key_problem(event.key)
            if unsafe is not None:
                _report(stats, strict, ref.path, event.key, "unsafe key", unsafe)
            elif event.problem is not None:
                _report(stats, strict, ref.path, event.key, event.problem.reason, event.problem.detail)
            else:
                yield event
        elif isinstance(event, DuplicateKey):
            _report(stats, strict, ref.path, event.key, "duplicate key", "second occurrence dropped")
        elif isinstance(event, TarDamage):
            lost = 1
            if ref.expected_samples is not None:
                lost = max(ref.expected_samples - seen, 1)
            key = event.key or f"{ref.path.name}[after {seen} samples]"
            detail = f"{event.detail}; {lost} sample(s) unreadable" if ref.expected_samples else event.detail
            _report(stats, strict, ref.path, key, "corrupt tar", detail, count=lost)


def shuffle_buffer_iter(items: Iterable[Any], buffer_size: int, rng: random.Random) -> Iterator[Any]:
    """Approximate shuffle with a buffer of `buffer_size` items (0 or 1: unchanged order)."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = rng.randrange(len(buffer))
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer


def _epoch_samples(
    refs: list[ShardRef],
    rng: random.Random,
    *,
    shuffle_buffer: int,
    decode: bool,
    strict: bool,
    require: Sequence[str],
    stats: SkipStats,
    limits: Limits,
) -> Iterator[dict[str, Any]]:
    order = list(refs)
    if shuffle_buffer > 1:
        rng.shuffle(order)

    def raw_stream() -> Iterator[tuple[ShardRef, RawSample]]:
        for ref in order:
            for raw in _raw_samples(ref, stats, strict, limits):
                yield ref, raw

    for ref, raw in shuffle_buffer_iter(raw_stream(), shuffle_buffer, rng):
        fields: dict[str, Any] = {"__key__": raw.key, "__shard__": str(ref.path), **raw.fields}
        try:
            sample = decode_sample(fields, require=require, decode=decode, limits=limits)
        except SampleProblem as problem:
            _report(stats, strict, ref.path, raw.key, problem.reason, problem.detail)
            continue
        stats.yielded += 1
        yield sample


def iter_worker_samples(
    refs: list[ShardRef],
    *,
    seed: int = 0,
    rank: int = 0,
    worker: int = 0,
    shuffle_buffer: int = 0,
    decode: bool = True,
    strict: bool = False,
    require: Sequence[str] = ("jpg", "txt"),
    stats: SkipStats | None = None,
    epochs: int | None = 1,
    first_epoch: int = 0,
    limits: Limits | None = None,
) -> Iterator[dict[str, Any]]:
    """Samples of an already-selected shard list, for `epochs` passes (None: forever).

    limits: None takes this process's (dftrain.shards.limits.current_limits()).
    """
    stats = stats if stats is not None else SkipStats()
    limits = limits or current_limits()
    if not refs:
        log.warning("rank %d worker %d has no shards to read (more ranks/workers than shards)", rank, worker)
        return
    epoch = first_epoch
    while epochs is None or epoch < first_epoch + epochs:
        rng = random.Random(f"{seed}-{epoch}-{rank}-{worker}")
        before = stats.yielded
        yield from _epoch_samples(
            refs, rng, shuffle_buffer=shuffle_buffer, decode=decode, strict=strict, require=require, stats=stats,
            limits=limits,
        )
        if epochs is None and stats.yielded == before:
            raise ShardError(f"no valid sample in a whole pass over {len(refs)} shard(s): {stats.summary()}")
        epoch += 1


def iter_samples(
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
    limits: Limits | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield this rank's samples: {"__key__", "__shard__", "jpg": bytes, "image": PIL RGB, "txt": str,
    "json": dict, "cls": int, other fields as bytes}.

    rank / world_size: None takes them from RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS, else (0, 1).
    Pass rank=0, world_size=1 to read everything regardless of the environment.
    """
    info = rank_info(rank, world_size)
    refs = select_shards(resolve_shards(dir_or_paths), info.rank, info.world_size)
    return iter_worker_samples(
        refs,
        seed=seed,
        rank=info.rank,
        shuffle_buffer=shuffle_buffer,
        decode=decode,
        strict=strict,
        require=tuple(require),
        stats=stats,
        epochs=epochs,
        limits=limits,
    )
