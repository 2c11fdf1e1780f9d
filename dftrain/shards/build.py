"""Build shards from files: `shard build` (images + a captions file) and `shard objects` (an image folder).

Both go in sorted key order, so the same inputs always give the same tars (a re-run after a crash
rewrites identical shards and never duplicates a sample). JPEGs are copied byte for byte; other
formats are converted to JPEG. A caption without a usable image is skipped, counted and logged with
its key (strict=True stops at the first with ShardError).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dftrain.errors import ConfigError
from dftrain.outputs import check_output_folder, claim_output
from dftrain.processes import worker_context
from dftrain.shards.limits import Limits, current_limits
from dftrain.shards.manifest import ShardError
from dftrain.shards.reader import SkipStats
from dftrain.shards.samples import SampleProblem
from dftrain.shards.writer import ShardWriter

log = logging.getLogger("dftrain.shards")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
JPEG_QUALITY = 95


@dataclass
class BuildReport:
    out: Path
    written: int = 0
    shards: int = 0
    stats: SkipStats = field(default_factory=SkipStats)
    unused_images: int = 0
    duplicates: int = 0  # repeated caption keys / captions / images, merged (see load_captions)
    classes: list[dict[str, Any]] = field(default_factory=list)


# --- captions -----------------------------------------------------------------------------------------

def _as_caption_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


class _Pairs(list):
    """A JSON object as its (key, value) pairs, so that a key given twice is seen."""


@dataclass
class CaptionsFile:
    """A captions file read: {key: [captions]}, entries that are unusable, and repeated entries."""

    captions: dict[str, list[str]]
    problems: list[tuple[str, str]]  # (where, problem): skipped entries
    duplicates: list[tuple[str, str]]  # (key, what): repeated keys or captions, reported and kept once


def load_captions(path: str | os.PathLike) -> CaptionsFile:
    """Read captions from JSON ({key: caption | [captions]}), JSONL ({"key", "caption"|"captions"}) or
    CSV/TSV (header with `key` and `caption`).

    A key given several times (several CSV rows or JSONL lines, or twice in one JSON object, which
    JSON readers would otherwise resolve by dropping the earlier one silently) collects all its
    captions; a JSON key given twice, and the same caption given twice for one key, are listed in
    `duplicates` (the caption is kept once).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"captions file not found: {path}")
    suffix = path.suffix.lower()
    result = CaptionsFile({}, [], [])

    def add(key: Any, value: Any, where: str) -> None:
        caption_list = _as_caption_list(value)
        if not isinstance(key, str | int) or str(key) == "":
            result.problems.append((where, "missing key"))
        elif caption_list is None:
            result.problems.append((str(key), "bad caption entry (need a string or a list of strings)"))
        else:
            known = result.captions.setdefault(str(key), [])
            for caption in caption_list:
                if caption.strip() and caption in known:
                    result.duplicates.append((str(key), f"caption given twice ({where})"))
                else:
                    known.append(caption)

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"captions file {path} is not UTF-8: {exc}") from exc
    if suffix == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_Pairs)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"captions file {path}: invalid JSON ({exc})") from exc
        if not isinstance(data, _Pairs):
            raise ConfigError(f"captions file {path}: expected a JSON object {{key: caption or [captions]}}")
        seen: set[str] = set()
        for key, value in data:
            if key in seen:
                result.duplicates.append((key, "key given twice in the JSON object (both kept)"))
            seen.add(key)
            add(key, value, f"key {key}")
    elif suffix in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                result.problems.append((f"line {number}", f"invalid JSON ({exc})"))
                continue
            if not isinstance(record, dict):
                result.problems.append((f"line {number}", "not a JSON object"))
                continue
            value = record.get("captions", record.get("caption"))
            add(record.get("key"), value, f"line {number}")
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        if not reader.fieldnames or "key" not in reader.fieldnames or "caption" not in reader.fieldnames:
            raise ConfigError(f"captions file {path}: the header must name the columns 'key' and 'caption'")
        for number, row in enumerate(reader, start=2):
            add(row.get("key"), row.get("caption"), f"line {number}")
    else:
        raise ConfigError(f"captions file {path}: unknown format {suffix!r} (use .json, .jsonl or .csv)")
    return result


# --- images -------------------------------------------------------------------------------------------

def list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def index_images(folder: Path) -> tuple[dict[str, Path], set[str]]:
    """Map each image's relative path without suffix, and its bare stem when unique, to the file."""
    by_name: dict[str, Path] = {}
    stems: dict[str, list[Path]] = {}
    for path in list_images(folder):
        relative = path.relative_to(folder).with_suffix("").as_posix()
        by_name.setdefault(relative, path)
        stems.setdefault(path.stem, []).append(path)
    ambiguous = set()
    for stem, paths in stems.items():
        if len(paths) == 1:
            by_name.setdefault(stem, paths[0])
        elif stem not in by_name:
            ambiguous.add(stem)
    return by_name, ambiguous


def jpeg_bytes(path: Path, limits: Limits | None = None) -> tuple[bytes, int, int]:
    """(JPEG bytes, width, height): JPEG files copied as they are, anything else converted.

    The limits are checked before reading (file size) and before decoding (header pixels).
    """
    from PIL import Image

    limits = limits or current_limits()
    try:
        size = path.stat().st_size
        if size > limits.max_member_bytes:
            raise SampleProblem("image file too large",
                                f"{path.name}: {size} bytes > max_member_bytes {limits.max_member_bytes}")
        data = path.read_bytes()
    except OSError as exc:
        raise SampleProblem("unreadable image", f"{path.name}: {exc.strerror or exc}") from None
    try:
        img = limits.open_image(data)
    except SampleProblem as problem:
        raise SampleProblem(problem.reason, f"{path.name}: {problem.detail}") from None
    try:
        with img:
            img.load()
            width, height = img.size
            if img.format == "JPEG":
                return data, width, height
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # Transparent areas become white instead of whatever colour the pixels hold.
                rgba = img.convert("RGBA")
                rgb = Image.new("RGB", rgba.size, (255, 255, 255))
                rgb.paste(rgba, mask=rgba.getchannel("A"))
            else:
                rgb = img.convert("RGB")
        buffer = io.BytesIO()
        rgb.save(buffer, "JPEG", quality=JPEG_QUALITY)
    except Exception as exc:  # PIL raises many exception types for bad files
        raise SampleProblem("undecodable image", f"{path.name}: {type(exc).__name__}: {exc}") from None
    converted = buffer.getvalue()
    limits.check_member(f"{path.name} as JPEG", len(converted))
    return converted, width, height


def _convert(path: Path, limits: Limits) -> tuple:
    """jpeg_bytes as a picklable result for worker processes: ("ok", data, w, h) or ("bad", reason, detail)."""
    try:
        return ("ok", *jpeg_bytes(path, limits))
    except SampleProblem as problem:
        return ("bad", problem.reason, problem.detail)


def convert_images(paths: Iterable[Path], workers: int = 1, limits: Limits | None = None) -> Iterator[tuple]:
    """_convert over `paths`, in order; with workers > 1 in a process pool with a bounded look-ahead
    (so a slow writer never makes the pool hold every converted image in memory)."""
    limits = limits or current_limits()
    if workers <= 1:
        yield from (_convert(path, limits) for path in paths)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool:
        remaining = iter(paths)
        pending = deque(pool.submit(_convert, path, limits) for path in itertools.islice(remaining, workers * 8))
        while pending:
            result = pending.popleft().result()
            following = next(remaining, None)
            if following is not None:
                pending.append(pool.submit(_convert, following, limits))
            yield result


def _skip(report: BuildReport, strict: bool, key: str, reason: str, detail: str = "") -> None:
    message = f"{key}: {reason}" + (f" ({detail})" if detail else "")
    if strict:
        raise ShardError(f"strict mode: {message}")
    log.warning("skipped %s", message)
    report.stats.add(key, reason)


def _duplicate(report: BuildReport, strict: bool, key: str, what: str) -> None:
    """A repeated key, caption or image: kept once, counted and warned (an error in strict mode)."""
    if strict:
        raise ShardError(f"strict mode: captions key {key}: {what}")
    log.warning("duplicate: captions key %s: %s", key, what)
    report.duplicates += 1


def _tick(on_sample: Callable[[], None] | None) -> None:
    if on_sample is not None:
        on_sample()


# --- shard build --------------------------------------------------------------------------------------

@dataclass
class _Planned:
    index: int
    caption_key: str
    texts: list[str]
    path: Path
    other_keys: list[str] = field(default_factory=list)  # further caption keys naming the same image


def build_shards(
    images: str | os.PathLike,
    captions: str | os.PathLike,
    out: str | os.PathLike,
    *,
    samples_per_shard: int = 10000,
    strict: bool = False,
    command: str = "",
    workers: int = 1,
    on_sample: Callable[[], None] | None = None,
    overwrite: bool = False,
    limits: Limits | None = None,
) -> BuildReport:
    """Training shards from an image folder and a captions file (see load_captions).

    Caption problems (empty or over-long caption, no or ambiguous image) are found before anything
    is written; captions whose keys name the same image file become one sample with all their
    captions (warned). Images are then converted (in `workers` processes) and written in sorted key
    order. The limits (dftrain.shards.limits; None: this process's) are the ones every reader
    applies, so nothing stored here is skipped later.
    """
    images, out = Path(images), Path(out)
    limits = limits or current_limits()
    if not images.is_dir():
        raise ConfigError(f"image folder not found: {images}")
    check_output_folder(out, "shard build", overwrite=overwrite)  # refuse before any work
    loaded = load_captions(captions)
    caption_map = loaded.captions
    by_name, ambiguous = index_images(images)
    report = BuildReport(out)
    for where, problem in loaded.problems:
        _skip(report, strict, where, "bad caption entry", problem)
    for key, what in loaded.duplicates:
        _duplicate(report, strict, key, what)
    plan: list[_Planned] = []
    by_file: dict[tuple[int, int], _Planned] = {}
    for index, caption_key in enumerate(sorted(caption_map)):
        texts = [text.strip() for text in caption_map[caption_key] if text.strip()]
        path = by_name.get(caption_key)
        too_long = _first_problem(limits.check_caption, texts)
        if not texts:
            _skip(report, strict, caption_key, "empty caption")
        elif too_long is not None:
            _skip(report, strict, caption_key, too_long.reason, too_long.detail)
        elif path is None:
            reason = "ambiguous image name" if caption_key in ambiguous else "missing image"
            _skip(report, strict, caption_key, reason, f"no unique image named {caption_key}.* in {images}")
        else:
            identity = _file_identity(path)
            first = by_file.get(identity)
            if first is None:
                by_file[identity] = planned = _Planned(index, caption_key, texts, path)
                plan.append(planned)
                continue
            # One image under two keys (nested/x and x, a link): one sample, all captions kept.
            _duplicate(report, strict, caption_key, f"names the same image as key {first.caption_key} "
                       f"({path.relative_to(images).as_posix()}): one sample with both keys' captions")
            first.texts.extend(t for t in texts if t not in first.texts)
            first.other_keys.append(caption_key)
        _tick(on_sample)
    matched = {by_name[k] for k in caption_map if k in by_name}
    report.unused_images = len(set(by_name.values()) - matched)

    with claim_output(out, "shard build", overwrite=overwrite), \
            ShardWriter(out, samples_per_shard=samples_per_shard, kind="train", command=command) as writer:
        converted_all = convert_images((p.path for p in plan), workers, limits)
        for item, converted in zip(plan, converted_all, strict=True):
            if converted[0] == "bad":
                _skip(report, strict, item.caption_key, converted[1], converted[2])
            else:
                _, data, width, height = converted
                key = f"{item.index:09d}"
                meta: dict[str, Any] = {
                    "key": key,
                    "caption_key": item.caption_key,
                    "caption": item.texts[0],
                    "width": width,
                    "height": height,
                    "source": item.path.relative_to(images).as_posix(),
                }
                if len(item.texts) > 1:
                    meta["captions"] = item.texts
                if item.other_keys:
                    meta["other_caption_keys"] = item.other_keys
                writer.write({"__key__": key, "jpg": data, "txt": item.texts[0], "json": meta})
            _tick(on_sample)
        writer.manifest.extra = {
            "skipped": dict(report.stats.skipped),
            "captions": len(caption_map),
            "images_without_caption": report.unused_images,
            "duplicates": report.duplicates,
            "limits": limits.to_dict(),
        }
    report.written = writer.samples_written
    report.shards = len(writer.manifest.shards)
    if report.unused_images:
        log.info("%d image(s) in %s have no caption and were not used", report.unused_images, images)
    return report


def _first_problem(check: Callable[[str], None], values: Iterable[str]) -> SampleProblem | None:
    for value in values:
        try:
            check(value)
        except SampleProblem as problem:
            return problem
    return None


def _file_identity(path: Path) -> tuple[int, int]:
    """(device, inode): the same file reached through two names or a link is one image."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino


# --- shard objects ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ObjectClass:
    name: str
    folder: Path
    wnid: str | None = None
    synonyms: tuple[str, ...] = ()  # every name of words.txt, the first (name) included


def split_synonyms(text: str) -> list[str]:
    """'goldfish, Carassius auratus' -> ['goldfish', 'Carassius auratus'] (words.txt's convention)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def read_words_txt(path: Path) -> dict[str, list[str]]:
    """Tiny-ImageNet / ImageNet words.txt: 'wnid<TAB>name, other name, ...' -> {wnid: [name, other name, ...]}."""
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        wnid, _, words = line.partition("\t")
        if wnid.strip() and split_synonyms(words):
            names[wnid.strip()] = split_synonyms(words)
    return names


def find_object_classes(root: Path) -> tuple[str, list[ObjectClass]]:
    """('tiny-imagenet' | 'class-folders', classes in sorted order)."""
    if not root.is_dir():
        raise ConfigError(f"image folder not found: {root}")
    words = root / "words.txt"
    train = root / "train"
    if not words.is_file() and (root.parent / "words.txt").is_file() and root.name == "train":
        words, train = root.parent / "words.txt", root
    if words.is_file() and train.is_dir():
        names = read_words_txt(words)
        classes = []
        for folder in sorted(p for p in train.iterdir() if p.is_dir()):
            if folder.name not in names:
                log.warning("%s is not in %s: its class name is the id", folder.name, words)
            image_dir = folder / "images" if (folder / "images").is_dir() else folder
            synonyms = names.get(folder.name, [folder.name])
            classes.append(ObjectClass(synonyms[0], image_dir, folder.name, tuple(synonyms)))
        return "tiny-imagenet", classes
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return "class-folders", [ObjectClass(folder.name, folder) for folder in folders]


def build_objects(
    imagefolder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    samples_per_shard: int = 10000,
    strict: bool = False,
    command: str = "",
    workers: int = 1,
    on_sample: Callable[[], None] | None = None,
    overwrite: bool = False,
    limits: Limits | None = None,
) -> BuildReport:
    """A labelled object bank: samples with `jpg`, `cls` (class id) and `json` (class name, wnid)."""
    root, out = Path(imagefolder), Path(out)
    limits = limits or current_limits()
    check_output_folder(out, "shard objects", overwrite=overwrite)  # refuse before any work
    layout, classes = find_object_classes(root)
    per_class = [(cls, list_images(cls.folder)) for cls in classes]
    for cls, files in per_class:
        if not files:
            log.warning("class folder %s has no images: left out", cls.folder)
    per_class = [(cls, files) for cls, files in per_class if files]
    if not per_class:
        raise ConfigError(f"no class folders with images in {root}")
    report = BuildReport(out)
    planned = [(class_id, cls, path) for class_id, (cls, files) in enumerate(per_class) for path in files]
    written_per_class = [0] * len(per_class)
    with claim_output(out, "shard objects", overwrite=overwrite), \
            ShardWriter(out, samples_per_shard=samples_per_shard, kind="objects", command=command) as writer:
        converted_all = convert_images((path for _, _, path in planned), workers, limits)
        for index, ((class_id, cls, path), converted) in enumerate(zip(planned, converted_all, strict=True)):
            source = path.relative_to(root).as_posix()
            if converted[0] == "bad":
                _skip(report, strict, source, converted[1], converted[2])
            else:
                _, data, width, height = converted
                key = f"{index:09d}"
                meta: dict[str, Any] = {"key": key, "class_id": class_id, "class_name": cls.name,
                                        "source": source, "width": width, "height": height}
                if cls.wnid is not None:
                    meta["wnid"] = cls.wnid
                if len(cls.synonyms) > 1:  # training draws one per fusion (--object-label synonym)
                    meta["class_synonyms"] = list(cls.synonyms)
                writer.write({"__key__": key, "jpg": data, "cls": class_id, "json": meta})
                written_per_class[class_id] += 1
            _tick(on_sample)
        for class_id, (cls, _) in enumerate(per_class):
            entry: dict[str, Any] = {"class_id": class_id, "class_name": cls.name,
                                     "samples": written_per_class[class_id]}
            if cls.wnid is not None:
                entry["wnid"] = cls.wnid
            if len(cls.synonyms) > 1:
                entry["class_synonyms"] = list(cls.synonyms)
            report.classes.append(entry)
        writer.manifest.extra = {"layout": layout, "classes": report.classes, "skipped": dict(report.stats.skipped),
                                 "limits": limits.to_dict()}
    report.written = writer.samples_written
    report.shards = len(writer.manifest.shards)
    return report


def count_inputs(path: str | os.PathLike) -> int:
    """Number of image files under a folder (for a progress bar's total)."""
    return len(list_images(Path(path)))
