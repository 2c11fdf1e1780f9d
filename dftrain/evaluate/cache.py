"""Descriptor cache per image set: embed once, recompute only images that changed.

A cache entry is two files, `<stem>.safetensors` (tensor "descriptors", n x dim float32) and
`<stem>.json` (descriptor cache_id, dim, and per row the image key and the sha256 of its bytes).
A row is reused when the key is present with the same image hash under the same descriptor
cache_id; anything else is embedded again. Writes are atomic (temp file + rename, json last).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dftrain.errors import DftrainError
from dftrain.evaluate.inputs import Unreadable, decode_image
from dftrain.files import atomic_path, atomic_write_text

log = logging.getLogger("dftrain.evaluate")

CACHE_VERSION = 1


@dataclass
class EmbeddedSet:
    keys: list[str]
    descriptors: np.ndarray  # (len(keys), dim) float32
    digests: list[str]
    reused: int = 0
    computed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    cache_stem: Path | None = None


def image_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_stem(cache_dir: Path, kind: str, source: Path, cache_id: str) -> Path:
    """One cache entry per (image set location, descriptor)."""
    where = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:16]
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in cache_id)
    return Path(cache_dir) / f"{kind}-{where}-{safe_id}"


def load_cache(stem: Path, cache_id: str) -> dict[str, tuple[str, np.ndarray]]:
    """key -> (digest, descriptor row) of a cache entry, or {} when absent, stale or damaged."""
    meta_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not (meta_path.is_file() and data_path.is_file()):
        return {}
    try:
        from safetensors.numpy import load_file

        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") != CACHE_VERSION or meta.get("cache_id") != cache_id:
            return {}
        data = load_file(str(data_path))["descriptors"]
        if data.shape != (len(meta["keys"]), meta["dim"]):
            raise ValueError(f"shape {data.shape} does not match the index")
    except Exception as exc:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
        log.warning("descriptor cache %s unreadable (%s); recomputing", stem, exc)
        return {}
    return {k: (d, data[i]) for i, (k, d) in enumerate(zip(meta["keys"], meta["digests"], strict=True))}


def save_cache(stem: Path, cache_id: str, keys: list[str], digests: list[str], descriptors: np.ndarray) -> None:
    from safetensors.numpy import save_file

    stem.parent.mkdir(parents=True, exist_ok=True)
    data_path, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    with atomic_path(data_path) as tmp:
        save_file({"descriptors": np.ascontiguousarray(descriptors, dtype=np.float32)}, str(tmp))
    meta = {"version": CACHE_VERSION, "cache_id": cache_id, "dim": int(descriptors.shape[1]),
            "keys": keys, "digests": digests}
    atomic_write_text(meta_path, json.dumps(meta))


def embed_set(descriptor, items: Iterable[tuple[str, bytes]], stem: Path | None = None, *,  # noqa: C901 (predates the complexity rule)
              batch_size: int = 256, progress: Callable[[int], None] | None = None) -> EmbeddedSet:
    """Descriptors of every (key, image bytes) item, reusing cached rows whose image is unchanged.

    Undecodable images, images over the shard limits, and `Unreadable` items are skipped, logged with
    their key and listed in `skipped`.
    Keys must be unique (DftrainError otherwise). `stem=None` disables the cache.
    """
    cached = load_cache(stem, descriptor.cache_id) if stem is not None else {}
    keys: list[str] = []
    digests: list[str] = []
    rows: list[np.ndarray | None] = []
    pending: list[tuple[int, object]] = []  # (row position, decoded image)
    result = EmbeddedSet([], np.zeros((0, descriptor.dim), np.float32), [], cache_stem=stem)
    seen: set[str] = set()

    def flush() -> None:
        if not pending:
            return
        embedded = np.asarray(descriptor.embed([img for _, img in pending]), dtype=np.float32)
        if embedded.shape != (len(pending), descriptor.dim):
            raise DftrainError(f"descriptor {descriptor.name} returned shape {embedded.shape}, "
                               f"expected ({len(pending)}, {descriptor.dim})")
        for (pos, _), row in zip(pending, embedded, strict=True):
            rows[pos] = row
        result.computed += len(pending)
        if progress:
            progress(len(pending))
        pending.clear()

    for key, data in items:
        if key in seen:
            raise DftrainError(f"image key {key!r} appears twice in one image set; keys must be unique")
        seen.add(key)
        if isinstance(data, Unreadable):
            log.warning("skipping image %s: %s", key, data.reason)
            result.skipped.append((key, data.reason))
            continue
        digest = image_digest(data)
        hit = cached.get(key)
        if hit is not None and hit[0] == digest:
            keys.append(key)
            digests.append(digest)
            rows.append(hit[1])
            result.reused += 1
            if progress:
                progress(1)
            continue
        try:
            img = decode_image(data)
        except DftrainError as exc:
            log.warning("skipping image %s: %s", key, exc)
            result.skipped.append((key, str(exc)))
            continue
        keys.append(key)
        digests.append(digest)
        rows.append(None)
        pending.append((len(rows) - 1, img))
        if len(pending) >= batch_size:
            flush()
    flush()

    result.keys, result.digests = keys, digests
    if rows:
        result.descriptors = np.stack(rows).astype(np.float32, copy=False)
    changed = result.computed > 0 or set(cached) != set(keys)
    if stem is not None and changed and keys:
        save_cache(stem, descriptor.cache_id, keys, digests, result.descriptors)
    return result
