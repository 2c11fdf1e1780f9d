"""The manifest beside a shard folder: which tars make the dataset, their sizes, counts and checksums.

A folder is a finished dataset only when `manifest.json` exists: writers write it last (atomically),
and the reader refuses a folder without one, so an interrupted write never looks finished.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dftrain.digests import sha256_file  # noqa: F401  (part of the shards API)
from dftrain.errors import DftrainError
from dftrain.files import atomic_write_bytes

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ShardError(DftrainError):
    """A shard folder, tar or sample is missing, damaged or invalid."""


@dataclass(frozen=True)
class ShardInfo:
    """One finished tar: file name (relative to the manifest's folder), sample count, checksum, size."""

    name: str
    samples: int
    sha256: str
    bytes: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardInfo:
        try:
            info = cls(str(data["name"]), int(data["samples"]), str(data["sha256"]), int(data["bytes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardError(f"invalid shard entry in manifest: {data!r} ({exc})") from exc
        if Path(info.name).is_absolute() or ".." in Path(info.name).parts:
            raise ShardError(f"invalid shard name in manifest (must be relative, inside the folder): {info.name!r}")
        return info


def _now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Manifest:
    """`manifest.json`: schema version, kind, shards, total samples, the command that made it, extra."""

    kind: str = "train"
    shards: list[ShardInfo] = field(default_factory=list)
    command: str = ""
    created: str = field(default_factory=_now_iso)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def total_samples(self) -> int:
        return sum(shard.samples for shard in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(shard.bytes for shard in self.shards)

    def shard_paths(self, folder: str | os.PathLike) -> list[Path]:
        return [Path(folder) / shard.name for shard in self.shards]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "kind": self.kind,
            "shards": [asdict(shard) for shard in self.shards],
            "total_samples": self.total_samples,
            "command": self.command,
            "created": self.created,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise ShardError(f"{where}: not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ShardError(f"{where}: unsupported schema_version {version!r} (this dftrain reads {SCHEMA_VERSION})")
        shards_data = data.get("shards")
        if not isinstance(shards_data, list):
            raise ShardError(f"{where}: 'shards' must be a list")
        manifest = cls(
            kind=str(data.get("kind", "train")),
            shards=[ShardInfo.from_dict(entry) for entry in shards_data],
            command=str(data.get("command", "")),
            created=str(data.get("created", "")),
            extra=dict(data.get("extra") or {}),
            schema_version=version,
        )
        names = [shard.name for shard in manifest.shards]
        if len(set(names)) != len(names):
            raise ShardError(f"{where}: a shard is listed twice")
        stated = data.get("total_samples")
        if stated is not None and stated != manifest.total_samples:
            raise ShardError(
                f"{where}: total_samples {stated} != sum of shard samples {manifest.total_samples}"
            )
        return manifest

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Manifest:
        """Read `folder/manifest.json`; ShardError if it is missing or invalid."""
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise ShardError(
                f"no {MANIFEST_NAME} in {folder}: not a finished shard folder "
                "(the write was interrupted, or this is not a dftrain shard folder)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ShardError(f"cannot read {path}: {exc}") from exc
        return cls.from_dict(data, where=str(path))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `folder/manifest.json` atomically; returns its path."""
        path = Path(folder) / MANIFEST_NAME
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"))
        return path
