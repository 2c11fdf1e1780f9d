"""Content fingerprints for reuse decisions: files, folders, models, options. Never paths.

- file_sha256(path): sha256 of the bytes. Large files are hashed once per version: the digest is
  memoized in the dftrain cache under the file's (real path, size, mtime_ns, inode, device), so a
  5 GB weights file is read again only after it changed (as git's index and make decide).
- tree_sha256(path): a file's sha256; for a shard folder (manifest.json) the digest of its kind and
  of every listed shard's name, sample count and sha256 (the manifest's time stamp and command do
  not count: a rebuild with the same content has the same fingerprint); for any other folder the
  digest of every file's relative path and sha256 (hidden files such as dftrain's lock and marker
  left out).
- options_sha256(obj): sha256 of canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dftrain.files import atomic_write_text

# Files smaller than this are hashed directly; larger ones through the memo.
MEMO_MIN_BYTES = 1 << 20
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks (not memoized)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _memo_path(path: Path, stat: os.stat_result) -> Path:
    from dftrain.paths import cache_dir

    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\0{stat.st_dev}"
    return cache_dir("fingerprints") / hashlib.sha256(key.encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (memoized for large files, see the module docstring)."""
    path = Path(path)
    stat = path.stat()
    if stat.st_size < MEMO_MIN_BYTES:
        return sha256_file(path)
    memo = _memo_path(path, stat)
    try:
        known = memo.read_text(encoding="ascii").strip()
        if len(known) == 64:
            return known
    except (OSError, UnicodeDecodeError):
        pass
    digest = sha256_file(path)
    try:
        atomic_write_text(memo, digest)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


def shard_folder_sha256(folder: str | os.PathLike) -> str:
    """Digest of a shard folder's content as its manifest describes it (kind, shards, checksums)."""
    from dftrain.shards import Manifest

    manifest = Manifest.load(folder)
    listed = [[s.name, s.samples, s.sha256] for s in manifest.shards]
    return options_sha256({"kind": manifest.kind, "shards": listed})


def tree_sha256(path: str | os.PathLike) -> str:
    """Digest of a file or folder's content (see the module docstring); FileNotFoundError if absent."""
    from dftrain.shards import MANIFEST_NAME

    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    if (path / MANIFEST_NAME).is_file():
        return shard_folder_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(f"{relative.as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def options_sha256(obj: Any) -> str:
    """sha256 of `obj` as canonical JSON (sorted keys; non-JSON values by str)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
