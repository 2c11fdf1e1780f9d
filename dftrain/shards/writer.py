"""Write webdataset tars atomically: each tar goes to `<name>.tmp` and is renamed when complete.

Tars are deterministic (fixed mtime, owner and mode, sorted fields), so writing the same samples
again gives byte-identical files with the same sha256: a re-run after a crash rewrites what it
must and never duplicates a shard. The manifest is written last, so a folder whose write was
interrupted has no manifest and the reader refuses it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dftrain.files import TMP_SUFFIX, fsync_dir
from dftrain.shards.manifest import MANIFEST_NAME, Manifest, ShardInfo
from dftrain.shards.samples import encode_sample

log = logging.getLogger("dftrain.shards")

SHARD_PATTERN = "shard-{index:06d}.tar"
_SHARD_NAME_RE = re.compile(r"^shard-\d{6}\.tar$")
# Fixed member metadata keeps tars byte-identical across runs.
_MTIME = 0
_MODE = 0o644


class _HashingFile(io.RawIOBase):
    """A write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, handle):
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self._handle.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


class _TarShard:
    """One tar being written to `<path>.tmp`; `finish()` renames it into place and returns its ShardInfo."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp_path = self.path.with_name(self.path.name + TMP_SUFFIX)
        self._file = open(self.tmp_path, "wb")
        self._hashing = _HashingFile(self._file)
        self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.PAX_FORMAT)
        self._keys: set[str] = set()
        self.samples = 0

    def add(self, sample: dict[str, Any]) -> None:
        key, members = encode_sample(sample)
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in {self.path.name}")
        self._keys.add(key)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = _MTIME
            info.mode = _MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def finish(self) -> ShardInfo:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp_path, self.path)
        fsync_dir(self.path.parent)
        return ShardInfo(self.path.name, self.samples, self._hashing.digest.hexdigest(), self._hashing.size)

    def abort(self) -> None:
        try:
            self._tar.close()
        except Exception:  # the tar may be half-written; it is deleted next
            pass
        self._file.close()
        self.tmp_path.unlink(missing_ok=True)


def write_shard(path: str | os.PathLike, samples: Iterable[dict[str, Any]]) -> ShardInfo:
    """Write one complete tar at `path` (via `path.tmp` and a rename); returns its ShardInfo."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shard = _TarShard(path)
    try:
        for sample in samples:
            shard.add(sample)
        return shard.finish()
    except BaseException:
        shard.abort()
        raise


def remove_leftover_temp_files(folder: Path) -> list[Path]:
    """Delete `*.tmp` files an interrupted write left behind; returns them."""
    leftovers = sorted(folder.glob("*" + TMP_SUFFIX)) + sorted(folder.glob("." + "*" + TMP_SUFFIX))
    for path in leftovers:
        log.warning("removing %s left by an interrupted write", path)
        path.unlink(missing_ok=True)
    return leftovers


class ShardWriter:
    """Write samples into `shard-000000.tar`, `shard-000001.tar`, ... rolling over every `samples_per_shard`.

    Use as a context manager. On a clean exit the last tar is finished and `manifest.json` written;
    on an exception the tar in progress is deleted and no manifest is written (the folder does not
    look finished). Opening a writer on a folder removes its old manifest and leftover `*.tmp`
    files; shard files of an earlier write that the new manifest does not list are removed at close.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        samples_per_shard: int = 10000,
        kind: str = "train",
        command: str = "",
        extra: dict[str, Any] | None = None,
    ):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.out_dir = Path(out_dir)
        self.samples_per_shard = samples_per_shard
        self.manifest = Manifest(kind=kind, command=command, extra=dict(extra or {}))
        self._current: _TarShard | None = None
        self._keys: set[str] = set()
        self._open = False
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> ShardWriter:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # The folder stops looking finished before anything in it changes.
        (self.out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        fsync_dir(self.out_dir)
        remove_leftover_temp_files(self.out_dir)
        self._open = True

    def write(self, sample: dict[str, Any]) -> None:
        if not self._open:
            self.open()
        if self.closed:
            raise RuntimeError("ShardWriter is closed")
        key = sample.get("__key__")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} (keys must be unique within a dataset)")
        if self._current is None:
            name = SHARD_PATTERN.format(index=len(self.manifest.shards))
            self._current = _TarShard(self.out_dir / name)
        self._current.add(sample)
        self._keys.add(key)
        if self._current.samples >= self.samples_per_shard:
            self._finish_current()

    def _finish_current(self) -> None:
        assert self._current is not None
        info = self._current.finish()
        self._current = None
        self.manifest.shards.append(info)
        log.debug("wrote %s (%d samples)", info.name, info.samples)

    def close(self) -> Manifest:
        """Finish the last tar, remove stale shards of an earlier write, write the manifest."""
        if self.closed:
            return self.manifest
        if not self._open:
            self.open()
        if self._current is not None:
            self._finish_current()
        listed = {shard.name for shard in self.manifest.shards}
        for path in sorted(self.out_dir.iterdir()):
            if _SHARD_NAME_RE.match(path.name) and path.name not in listed:
                log.warning("removing %s: an earlier write's shard, not part of the new dataset", path)
                path.unlink()
        self.manifest.save(self.out_dir)
        self.closed = True
        return self.manifest

    def abort(self) -> None:
        """Delete the tar in progress and leave the folder without a manifest."""
        if self._current is not None:
            self._current.abort()
            self._current = None
        self.closed = True

    @property
    def samples_written(self) -> int:
        return len(self._keys)
