"""Digests of bytes and of options, with nothing above them (shards and fingerprint both use them).

- sha256_file(path): the sha256 of a file's bytes, read in chunks.
- file_sha256(path): the same, memoized for large files in the dftrain cache under the file's (real path,
  size, mtime_ns, inode, device), so a 5 GB weights file is read again only after it changed (as git's
  index and make decide).
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


def options_sha256(obj: Any) -> str:
    """sha256 of `obj` as canonical JSON (sorted keys; non-JSON values by str)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
