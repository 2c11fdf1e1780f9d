"""Training-set descriptors on disk: one entry per (training shard content, descriptor, selection).

    ROOT/<identity>/<shard sha256>[.<selection digest>].npy        descriptors, (rows, dim), float16
                                                                    (float32 for FID features)
    ROOT/<identity>/<...>.ids.npy     uint64 (rows, 3): hash of the key, hash of the duplicate group,
                                      position of the sample in the shard
    ROOT/<identity>/<...>.keys.json   the sample keys, row by row
    ROOT/<identity>/<...>.json        what the entry holds and what was skipped; written last, so an
                                      entry with this file is complete

Reuse is keyed by content: the shard's sha256 from its manifest, and `identity` = the descriptor's
cache_id (its name, the digest of its weights and its preprocessing options) + a digest of the shard
reader's limits (they decide which samples are skipped). A selection (a seeded sample of positions,
for FID features) adds the digest of its positions. Where the training set lives plays no part.

Entries are computed shard by shard, each rank taking shards r, r + w, ... (dftrain.distributed), and
read back memory-mapped (TrainSet): the training set is never in memory at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dftrain.errors import DftrainError
from dftrain.evaluate.cache import image_digest
from dftrain.evaluate.inputs import decode_image
from dftrain.files import atomic_path, atomic_write_text

log = logging.getLogger("dftrain.evaluate")

STORE_VERSION = 1
MAX_LISTED = 100  # skipped keys listed per entry (the counts stay exact)
FLOAT32_DESCRIPTORS = ("inception",)  # FID features: float16 would move FID; the sample is small


def text_hash(text: str) -> int:
    """64-bit hash of a key or group name (a collision would only merge two duplicate groups)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def store_identity(descriptor) -> str:
    """Folder name for a descriptor's entries: its cache_id and the reader limits' digest."""
    from dftrain.shards.limits import current_limits

    limits = hashlib.sha256(repr(sorted(asdict(current_limits()).items())).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in descriptor.cache_id)
    return f"{safe}-limits{limits}"


def entry_stem(root: Path, identity: str, shard_sha256: str, positions: np.ndarray | None = None) -> Path:
    name = shard_sha256
    if positions is not None:
        name += "." + hashlib.sha256(np.asarray(positions, dtype=np.int64).tobytes()).hexdigest()[:16]
    return Path(root) / identity / name


def _path(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


def read_meta(stem: Path) -> dict | None:
    """The entry's metadata, or None when it is absent, incomplete or from another version."""
    try:
        meta = json.loads(_path(stem, ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("version") != STORE_VERSION:
        return None
    if not all(_path(stem, s).is_file() for s in (".npy", ".ids.npy", ".keys.json")):
        return None
    return meta


def reference_positions(counts: Sequence[int], n: int, seed: int) -> list[np.ndarray]:
    """A seeded sample of `n` of the sum(counts) training samples (all when fewer), as the sorted
    positions inside each shard (one array per shard, in manifest order)."""
    starts = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
    total = int(starts[-1])
    if total <= n:
        picks = np.arange(total, dtype=np.int64)
    else:
        picks = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    bounds = np.searchsorted(picks, starts)
    return [picks[bounds[i]:bounds[i + 1]] - starts[i] for i in range(len(counts))]


@dataclass
class Plan:
    """One descriptor to compute over a training set: on every sample, or on given positions per shard."""

    descriptor: object
    root: Path
    positions: list[np.ndarray] | None = None  # per shard; None = every sample
    rows_computed: int = 0
    rows_reused: int = 0
    shards_computed: int = 0
    shards_reused: int = 0

    def __post_init__(self) -> None:
        self.identity = store_identity(self.descriptor)

    def stem(self, index: int, shard) -> Path | None:
        """Entry of shard `index`; None when the plan takes nothing from that shard."""
        if self.positions is None:
            return entry_stem(self.root, self.identity, shard.sha256)
        if not len(self.positions[index]):
            return None
        return entry_stem(self.root, self.identity, shard.sha256, self.positions[index])

    def counts(self) -> dict[str, int]:
        return {"rows_computed": self.rows_computed, "rows_reused": self.rows_reused,
                "shards_computed": self.shards_computed, "shards_reused": self.shards_reused}


@dataclass
class _Pending:
    """Rows of one entry being computed."""

    plan: Plan
    stem: Path
    wanted: set[int] | None
    keys: list[str] = field(default_factory=list)
    ids: list[tuple[int, int, int]] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    images: list = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_skipped: int = 0

    def flush(self) -> None:
        if self.images:
            d = self.plan.descriptor
            out = np.asarray(d.embed(self.images), dtype=np.float32)
            if out.shape != (len(self.images), d.dim):
                raise DftrainError(f"descriptor {d.name} returned shape {out.shape}, "
                                   f"expected ({len(self.images)}, {d.dim})")
            self.rows.append(out)
            self.images = []


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_entry(stem: Path, rows: np.ndarray, keys: list[str], ids: np.ndarray, meta: dict) -> None:
    """Write one entry: descriptors, (key hash, group hash, position) per row, keys, then its metadata
    (`meta` + version and row count), which marks it complete. Each file is renamed into place."""
    if not (len(rows) == len(keys) == len(ids)):
        raise DftrainError(f"entry {stem}: {len(rows)} rows, {len(keys)} keys, {len(ids)} ids")
    stem.parent.mkdir(parents=True, exist_ok=True)
    _save_npy(_path(stem, ".npy"), rows)
    _save_npy(_path(stem, ".ids.npy"), np.asarray(ids, dtype=np.uint64).reshape(-1, 3))
    atomic_write_text(_path(stem, ".keys.json"), json.dumps(keys, ensure_ascii=False))
    meta = {**meta, "version": STORE_VERSION, "rows": len(keys), "dim": int(rows.shape[1]),
            "dtype": rows.dtype.name}
    atomic_write_text(_path(stem, ".json"), json.dumps(meta, ensure_ascii=False))  # last: the entry is complete


def _write_entry(p: _Pending, shard, reader) -> None:
    d = p.plan.descriptor
    dtype = np.float32 if d.name in FLOAT32_DESCRIPTORS else np.float16
    rows = np.concatenate(p.rows) if p.rows else np.zeros((0, d.dim), np.float32)
    save_entry(p.stem, rows.astype(dtype), p.keys, np.asarray(p.ids, dtype=np.uint64).reshape(-1, 3), {
        "descriptor": d.cache_id, "shard": shard.name, "sha256": shard.sha256,
        "positions": None if p.wanted is None else len(p.wanted),
        "decode_skipped": p.n_skipped, "decode_problems": p.skipped,
        "reader_skipped": dict(reader.skipped), "reader_problems": reader.problems[:MAX_LISTED]})


def compute_shard(shard_path: Path, shard, todo: list[tuple[Plan, Path, set[int] | None]], *,
                  batch_size: int = 256, progress: Callable[[int], None] | None = None) -> None:
    """Read one shard once and write an entry per (plan, stem, wanted positions) in `todo`."""
    from dftrain.shards.reader import ShardRef, SkipStats, iter_worker_samples

    stats = SkipStats()
    pending = [_Pending(plan, stem, wanted) for plan, stem, wanted in todo]
    samples = iter_worker_samples([ShardRef(shard_path, shard.samples)], decode=False, require=("jpg",),
                                  stats=stats)
    for position, sample in enumerate(samples):
        needing = [p for p in pending if p.wanted is None or position in p.wanted]
        if progress:
            progress(1)
        if not needing:
            continue
        key, data = sample["__key__"], sample["jpg"]
        try:
            image = decode_image(data)
        except DftrainError as exc:
            log.warning("skipping training image %s: %s", key, exc)
            for p in needing:
                p.n_skipped += 1
                if len(p.skipped) < MAX_LISTED:
                    p.skipped.append((key, str(exc)))
            continue
        meta = sample.get("json") if isinstance(sample.get("json"), dict) else {}
        group = meta.get("group")
        # As dftrain.evaluate.groups: the data's own group, else the image bytes (exact copies share it).
        group = f"sha256:{image_digest(data)}" if group is None else str(group)
        ids = (text_hash(key), text_hash(group), position)
        for p in needing:
            p.keys.append(key)
            p.ids.append(ids)
            p.images.append(image)
            if len(p.images) >= batch_size:
                p.flush()
    for p in pending:
        p.flush()
        _write_entry(p, shard, stats)
        p.plan.rows_computed += len(p.keys)
        p.plan.shards_computed += 1


def compute_missing(tars: Sequence[Path], shards: Sequence, plans: list[Plan], rank: int, world_size: int, *,
                    progress: Callable[[int], None] | None = None) -> None:
    """Compute this rank's missing entries (shards rank, rank + world_size, ...); each shard (`tars[i]`,
    described by `shards[i]`) is read once for all the plans that need it."""
    from dftrain.distributed import split_for_rank

    for index in split_for_rank(range(len(shards)), rank, world_size):
        shard = shards[index]
        todo = []
        for plan in plans:
            stem = plan.stem(index, shard)
            if stem is None:
                continue
            meta = read_meta(stem)
            if meta is not None:
                plan.rows_reused += int(meta["rows"])
                plan.shards_reused += 1
            else:
                wanted = None if plan.positions is None else set(plan.positions[index].tolist())
                todo.append((plan, stem, wanted))
        if todo:
            compute_shard(Path(tars[index]), shard, todo, progress=progress)
        elif progress:
            progress(shard.samples)


def missing_shards(shards: Sequence, plans: list[Plan]) -> list[str]:
    """Names of the shards some plan has no complete entry for."""
    missing = []
    for index, shard in enumerate(shards):
        for plan in plans:
            stem = plan.stem(index, shard)
            if stem is not None and read_meta(stem) is None:
                missing.append(shard.name)
                break
    return missing


def _npy_rows(path: Path) -> tuple[int, int]:
    """(rows, dim) from a .npy header, without reading the data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    return int(shape[0]), int(shape[1])


class TrainSet:
    """The entries of one plan over a whole training set, read as one array of rows (memory-mapped)."""

    def __init__(self, stems: Sequence[Path]) -> None:
        self.stems = list(stems)
        shapes = [_npy_rows(_path(s, ".npy")) for s in self.stems]
        self.counts = np.array([r for r, _ in shapes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        dims = {d for r, d in shapes if r}
        if len(dims) > 1:
            raise DftrainError(f"descriptor entries of different sizes {sorted(dims)} in one training set")
        self.dim = dims.pop() if dims else (shapes[0][1] if shapes else 0)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _array(self, i: int) -> np.ndarray:
        return np.load(_path(self.stems[i], ".npy"), mmap_mode="r")

    def ids(self, i: int) -> np.ndarray:
        return np.load(_path(self.stems[i], ".ids.npy"), mmap_mode="r")

    def keys(self, i: int) -> list[str]:
        return json.loads(_path(self.stems[i], ".keys.json").read_text(encoding="utf-8"))

    def meta(self, i: int) -> dict:
        return json.loads(_path(self.stems[i], ".json").read_text(encoding="utf-8"))

    def chunks(self, rows: int = 65_536) -> Iterator[np.ndarray]:
        """Every row in order, as float32 arrays of up to `rows` rows (one chunk in memory at a time)."""
        buffer, filled = None, 0
        for i in range(len(self.stems)):
            if not self.counts[i]:
                continue
            array = self._array(i)
            start = 0
            while start < len(array):
                if buffer is None:
                    buffer, filled = np.empty((rows, self.dim), np.float32), 0
                take = min(rows - filled, len(array) - start)
                buffer[filled:filled + take] = array[start:start + take]
                filled, start = filled + take, start + take
                if filled == rows:
                    yield buffer
                    buffer = None
            del array
        if buffer is not None and filled:
            yield buffer[:filled]

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(entry index, row inside the entry) of global row numbers."""
        rows = np.asarray(rows, dtype=np.int64)
        entry = np.searchsorted(self.offsets, rows, side="right") - 1
        return entry, rows - self.offsets[entry]

    def _by_entry(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(entry index, positions in `rows`, rows inside the entry) per entry that `rows` touch: one sort,
        not one scan per entry (a sample spread over 40,000 shards)."""
        entry, local = self.locate(rows)
        order = np.argsort(entry, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(entry[order])) + 1):
            if len(group):
                yield int(entry[group[0]]), group, local[group]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The given global rows, as float32, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), np.float32)
        for i, where, local in self._by_entry(rows):
            out[where] = self._array(i)[local]
        return out

    def all_rows(self) -> np.ndarray:
        """Every row (for a small set: the FID reference sample)."""
        return self.gather(np.arange(len(self)))

    def keys_of(self, rows: np.ndarray) -> list[str]:
        out: list[str] = [""] * len(rows)
        for i, where, local in self._by_entry(np.asarray(rows, dtype=np.int64)):
            keys = self.keys(i)
            for w, j in zip(where.tolist(), local.tolist(), strict=True):
                out[w] = keys[j]
        return out

    def rows_at_positions(self, positions: Sequence[np.ndarray]) -> np.ndarray:
        """Global rows of the samples at the given positions per shard (positions whose sample was
        skipped have no row)."""
        found = []
        for i, wanted in enumerate(positions):
            if len(wanted) and self.counts[i]:
                at = np.asarray(self.ids(i)[:, 2], dtype=np.int64)
                found.append(self.offsets[i] + np.flatnonzero(np.isin(at, wanted)))
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """(key hash, group hash, position) of the given global rows, (len(rows), 3) uint64."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), 3), np.uint64)
        for i, where, local in self._by_entry(rows):
            out[where] = self.ids(i)[local]
        return out

    def _hash_column(self, column: int) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(len(self.stems)):
            if self.counts[i]:
                yield i, np.asarray(self.ids(i)[:, column])

    def find_keys(self, key_hashes: set[int]) -> dict[int, int]:
        """key hash -> first global row with it, for the wanted hashes (one pass over the key hashes)."""
        wanted = np.fromiter(key_hashes, np.uint64, len(key_hashes))
        rows: dict[int, int] = {}
        for i, hashes in self._hash_column(0):
            for j in np.flatnonzero(np.isin(hashes, wanted)).tolist():
                rows.setdefault(int(hashes[j]), int(self.offsets[i] + j))
        return rows

    def count_groups(self, group_hashes: set[int]) -> dict[int, int]:
        """group hash -> training rows in that group, for the wanted groups (one pass over the group hashes)."""
        wanted = np.fromiter(group_hashes, np.uint64, len(group_hashes))
        counts = dict.fromkeys(group_hashes, 0)
        for _, hashes in self._hash_column(1):
            values, n = np.unique(hashes[np.isin(hashes, wanted)], return_counts=True)
            for g, c in zip(values.tolist(), n.tolist(), strict=True):
                counts[int(g)] += int(c)
        return counts

    def skipped(self) -> tuple[list[str], dict[str, int]]:
        """Keys skipped at decoding (up to MAX_LISTED per entry), and the reader's skip counts by reason."""
        keys, reasons = [], {}
        for i in range(len(self.stems)):
            meta = self.meta(i)
            keys += [k for k, _ in meta.get("decode_problems", [])]
            for reason, count in (meta.get("reader_skipped") or {}).items():
                reasons[reason] = reasons.get(reason, 0) + int(count)
        return keys, reasons
