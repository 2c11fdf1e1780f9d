"""Part files: how the ranks of a split shard job (adopt, build) hand their share to the merge.

Rank r of w writes `<folder>/<prefix>RRRRR-of-WWWWW.json` atomically when its share is done; whichever
rank then finds every part present (or `--merge` by hand) writes the one manifest and removes the
parts. A part records the job's identity (`job`): a part left by an earlier run with other inputs or
options does not count as done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dftrain.files import atomic_write_bytes


def part_path(folder: Path, prefix: str, rank: int, world_size: int) -> Path:
    return Path(folder) / f"{prefix}{rank:05d}-of-{world_size:05d}.json"


def write_part(folder: Path, prefix: str, rank: int, world_size: int, data: dict[str, Any]) -> Path:
    path = part_path(folder, prefix, rank, world_size)
    atomic_write_bytes(path, json.dumps(data).encode("utf-8"))
    return path


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, or merged and removed by another rank at this moment
        return None
    return data if isinstance(data, dict) else None


def read_parts(folder: Path, prefix: str, world_size: int, job: str | None = None) -> list[dict[str, Any]] | None:
    """Every rank's part in rank order, or None while one is missing (or from another job)."""
    parts = []
    for rank in range(world_size):
        part = _read(part_path(folder, prefix, rank, world_size))
        if part is None or (job is not None and part.get("job") != job):
            return None
        parts.append(part)
    return parts


def missing_parts(folder: Path, prefix: str, world_size: int, job: str | None = None) -> list[int]:
    """The ranks whose part is not there (or is another job's)."""
    return [r for r in range(world_size)
            if (part := _read(part_path(folder, prefix, r, world_size))) is None
            or (job is not None and part.get("job") != job)]


def remove_parts(folder: Path, prefix: str, world_size: int) -> None:
    for rank in range(world_size):
        part_path(folder, prefix, rank, world_size).unlink(missing_ok=True)
