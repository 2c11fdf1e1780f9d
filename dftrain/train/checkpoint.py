"""Checkpoint layout, atomic completion marker, and lookup for `--resume auto` and export.

RUN/checkpoints/
  step00000010/          DeepSpeed save_checkpoint(tag) on every rank (+ ema_rank{r}.safetensors,
                         dftrain.json with the resolved config, world size and ZeRO stage)
  latest_complete        the tag of the newest checkpoint that EVERY rank finished writing

`latest_complete` is replaced (temp file + rename) by rank 0 only after a barrier that
follows every rank's save, so a rank killed mid-save leaves the previous checkpoint as the
one `--resume auto` and `dftrain export` use. (DeepSpeed's own `latest` file is not written.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from dftrain.errors import DftrainError
from dftrain.files import atomic_write_text

POINTER = "latest_complete"
TAG_PATTERN = re.compile(r"^step(\d{8})$")
META_FILE = "dftrain.json"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def tag_for_step(step: int) -> str:
    return f"step{step:08d}"


def step_of_tag(tag: str) -> int:
    match = TAG_PATTERN.match(tag)
    if not match:
        raise DftrainError(f"not a dftrain checkpoint tag: {tag!r}")
    return int(match.group(1))



def mark_complete(ckpt_dir: Path, tag: str) -> None:
    atomic_write_text(ckpt_dir / POINTER, tag + "\n")


def latest_complete(ckpt_dir: Path) -> str | None:
    pointer = ckpt_dir / POINTER
    if not pointer.is_file():
        return None
    tag = pointer.read_text(encoding="utf-8").strip()
    return tag if (ckpt_dir / tag).is_dir() else None


def resolve_checkpoint(path: str | Path) -> tuple[Path, str]:
    """(checkpoints folder, tag) from a run folder, a checkpoints folder or a tag folder."""
    path = Path(path)
    if not path.exists():
        raise DftrainError(f"checkpoint not found: {path}")
    for ckpt_dir in (checkpoints_dir(path), path):
        if (ckpt_dir / POINTER).is_file():
            tag = latest_complete(ckpt_dir)
            if tag is None:
                raise DftrainError(f"{ckpt_dir / POINTER} names a checkpoint that does not exist")
            return ckpt_dir, tag
    if TAG_PATTERN.match(path.name) and (path / META_FILE).is_file():
        return path.parent, path.name
    raise DftrainError(
        f"no complete checkpoint in {path} (expected a run folder, its checkpoints/ folder, or a stepNNNNNNNN folder)"
    )


def find_resume_point(run_dir: str | Path) -> tuple[Path, str] | None:
    """For `--resume auto`: the newest complete checkpoint of this run, or None for a fresh start."""
    ckpt_dir = checkpoints_dir(run_dir)
    tag = latest_complete(ckpt_dir)
    return (ckpt_dir, tag) if tag else None


def write_meta(ckpt_dir: Path, tag: str, meta: dict) -> None:
    atomic_write_text(ckpt_dir / tag / META_FILE, json.dumps(meta, indent=2, sort_keys=True))


def read_meta(ckpt_dir: Path, tag: str) -> dict:
    path = ckpt_dir / tag / META_FILE
    if not path.is_file():
        raise DftrainError(f"{path} missing: not a dftrain checkpoint")
    return json.loads(path.read_text(encoding="utf-8"))


def ema_file(ckpt_dir: Path, tag: str, rank: int) -> Path:
    return ckpt_dir / tag / f"ema_rank{rank:05d}.safetensors"


def prune(ckpt_dir: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` checkpoints up to the complete one; never the complete one."""
    current = latest_complete(ckpt_dir)
    if current is None:
        return []
    limit = step_of_tag(current)
    tags = sorted(
        (p.name for p in ckpt_dir.iterdir() if p.is_dir() and TAG_PATTERN.match(p.name) and step_of_tag(p.name) <= limit),
        key=step_of_tag,
    )
    removed = [t for t in tags[:-keep] if t != current]
    for tag in removed:
        shutil.rmtree(ckpt_dir / tag, ignore_errors=True)
    return removed
