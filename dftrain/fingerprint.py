"""Content fingerprints for reuse decisions: files, folders, models, options. Never paths.

- file_sha256(path), options_sha256(obj): from dftrain/digests.py (memoized file digests, canonical JSON).
- tree_sha256(path): a file's sha256; for a shard folder (manifest.json) the digest of its kind and
  of every listed shard's name, sample count and sha256 (the manifest's time stamp and command do
  not count: a rebuild with the same content has the same fingerprint); for any other folder the
  digest of every file's relative path and sha256 (hidden files such as dftrain's lock and marker
  left out).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dftrain.digests import file_sha256, options_sha256


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
