"""Reading the two image sets evaluate compares: a generations folder and training shards."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from dftrain.errors import DftrainError
from dftrain.shards.limits import current_limits
from dftrain.shards.samples import SampleProblem

log = logging.getLogger("dftrain.evaluate")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PROMPTS_FILE = "prompts.jsonl"


@dataclass(frozen=True)
class Unreadable:
    """Stands for an image's bytes when the file was not read (over the limits); `reason` says why."""

    reason: str


@dataclass(frozen=True)
class Generation:
    file: str  # path relative to the generations folder
    prompt: str | None
    train_key: str | None
    seed: int | None


def load_generations(gen_dir: str | Path) -> list[Generation]:
    """The generations in `gen_dir`: from prompts.jsonl when present, else every image file in it.

    Raises DftrainError for a missing or empty folder, a malformed prompts.jsonl, or one naming
    files that do not exist.
    """
    gen_dir = Path(gen_dir)
    if not gen_dir.is_dir():
        raise DftrainError(f"generations folder {gen_dir} does not exist")
    prompts = gen_dir / PROMPTS_FILE
    if prompts.is_file():
        items = _read_prompts(prompts)
        missing = [g.file for g in items if not (gen_dir / g.file).is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DftrainError(f"{prompts} names {len(missing)} image(s) that do not exist in {gen_dir}: {shown}")
    else:
        files = sorted(p for p in gen_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        items = []
        for p in files:
            name = p.relative_to(gen_dir).as_posix()
            outside = _outside_folder(gen_dir, name)
            if outside:
                log.warning("skipping %s: it %s", name, outside)
            else:
                items.append(Generation(name, None, None, None))
    if not items:
        raise DftrainError(f"no generated images in {gen_dir} (expected {PROMPTS_FILE} or image files)")
    return items


def _read_prompts(path: Path) -> list[Generation]:
    items, seen = [], set()
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                file = row["file"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DftrainError(f"{path}:{line_no}: not a JSON object with a 'file' field ({exc})") from exc
            outside = _outside_folder(path.parent, file)
            if outside:
                raise DftrainError(f"{path}:{line_no}: file {file!r} {outside}; generations must lie inside "
                                   f"{path.parent}")
            if file in seen:
                raise DftrainError(f"{path}:{line_no}: file {file!r} listed twice")
            seen.add(file)
            seed = row.get("seed")
            items.append(Generation(file, row.get("prompt"), row.get("train_key"),
                                    None if seed is None else int(seed)))
    return items


def _outside_folder(folder: Path, file) -> str | None:
    """Why `file` (from prompts.jsonl) does not name a file inside `folder`, or None."""
    if not isinstance(file, str) or not file.strip():
        return "is not a file name"
    relative = PurePosixPath(file)
    if relative.is_absolute() or ".." in relative.parts or "\\" in file:
        return "points outside the generations folder"
    try:
        (folder / file).resolve().relative_to(folder.resolve())
    except ValueError:
        return "points outside the generations folder (through a link)"
    return None


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes to RGB under the shard limits (pixels checked on the header first);
    DftrainError naming the reason when they are not an image or too large."""
    try:
        return current_limits().decode_image(data)
    except SampleProblem as problem:
        raise DftrainError(f"{problem.reason} ({problem.detail})") from None


def iter_generation_bytes(gen_dir: Path, items: list[Generation]) -> Iterator[tuple[str, bytes | Unreadable]]:
    """(file, bytes) per generation; a file over max_member_bytes is not read (Unreadable)."""
    limit = current_limits().max_member_bytes
    for g in items:
        path = gen_dir / g.file
        size = path.stat().st_size
        if size > limit:
            yield g.file, Unreadable(f"image file too large ({size} bytes > max_member_bytes {limit})")
        else:
            yield g.file, path.read_bytes()


def original_caption(sample: dict) -> str | None:
    """The ORIGINAL caption of a training sample: json orig_caption, else json caption, else txt."""
    meta = sample.get("json") or {}
    for field in ("orig_caption", "caption"):
        value = meta.get(field) if isinstance(meta, dict) else None
        if isinstance(value, str) and value.strip():
            return value
    txt = sample.get("txt")
    if isinstance(txt, bytes):
        txt = txt.decode("utf-8", errors="replace")
    return txt if isinstance(txt, str) and txt.strip() else None


def iter_train_samples(train_dir: str | Path | list[Path], *, require: tuple[str, ...] = ("jpg",),
                       stats=None) -> Iterator[dict]:
    """Raw (undecoded) training samples, in shard order; bad samples are counted in `stats` and logged.

    `train_dir`: shard inputs as dftrain.shards.inputs.shard_set reads them (folders, tars inside shard
    folders, list files, or a ShardSet)."""
    from dftrain.shards import iter_samples
    from dftrain.shards.inputs import shard_set

    if isinstance(train_dir, str | Path) and not Path(train_dir).exists():
        raise DftrainError(f"training shards folder {train_dir} does not exist")
    yield from iter_samples(shard_set(train_dir), decode=False, require=require, stats=stats, rank=0, world_size=1)


def iter_train_bytes(train_dir: str | Path | list[Path], stats=None) -> Iterator[tuple[str, bytes]]:
    for sample in iter_train_samples(train_dir, stats=stats):
        yield sample["__key__"], sample["jpg"]


def read_train_images(train_dir: str | Path | list[Path], keys: set[str]) -> dict[str, Image.Image]:
    """Decode the training images with the given keys (one pass over the shards, or the tars given)."""
    found: dict[str, Image.Image] = {}
    if not keys:
        return found
    for key, data in iter_train_bytes(train_dir):
        if key in keys:
            try:
                found[key] = decode_image(data)
            except DftrainError:
                log.warning("training image %s could not be decoded for the figure", key)
            if len(found) == len(keys):
                break
    return found
