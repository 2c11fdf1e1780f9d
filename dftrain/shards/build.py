"""Build shards from files: `shard build` (images + a captions file) and `shard objects` (an image folder).

`shard build` goes in captions-file order (entries numbered as they come: see build_shards),
`shard objects` in sorted order, so the same inputs always give the same tars (a re-run after a crash
rewrites identical shards and never duplicates a sample). JPEGs are copied byte for byte; other
formats are converted to JPEG. A caption without a usable image is skipped, counted and logged with
its key (strict=True stops at the first with ShardError).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dftrain.errors import ConfigError
from dftrain.files import TMP_SUFFIX
from dftrain.outputs import check_output_folder, claim_output
from dftrain.processes import worker_context
from dftrain.shards.captions import (
    FAILED_DOWNLOAD,
    JSON_KEY_TWICE,
    CaptionEntry,
    caption_entries,
    caption_files,
    iter_caption_records,
)
from dftrain.shards.limits import Limits, current_limits
from dftrain.shards.manifest import MANIFEST_NAME, Manifest, ShardError, ShardInfo
from dftrain.shards.parts import missing_parts, part_path, read_parts, remove_parts, write_part
from dftrain.shards.reader import SkipStats
from dftrain.shards.samples import SampleProblem
from dftrain.shards.writer import SHARD_PATTERN, ShardWriter, write_shard

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
    manifest_written: bool = True
    waiting_for: list[int] = field(default_factory=list)  # ranks whose part is not there yet


# --- captions (streamed: dftrain/shards/captions.py) ---------------------------------------------------

@dataclass
class CaptionsFile:
    """A captions file read whole: {key: [captions]}, entries that are unusable, and repeated entries."""

    captions: dict[str, list[str]]
    problems: list[tuple[str, str]]  # (where, problem): skipped entries
    duplicates: list[tuple[str, str]]  # (key, what): repeated keys or captions, reported and kept once


def load_captions(path: str | os.PathLike) -> CaptionsFile:
    """Every caption of a captions file in memory (small sets, tests); `shard build` streams instead.

    A key given several times collects all its captions; a JSON key given twice, and the same caption
    given twice for one key, are listed in `duplicates` (the caption is kept once).
    """
    result = CaptionsFile({}, [], [])
    json_keys: set[str] = set()
    for record in iter_caption_records(path):
        if record.problem is not None:
            result.problems.append((record.where, record.problem))
            continue
        key = str(record.key)
        if record.source is not None and record.source.suffix.lower() == ".json":
            if key in json_keys:
                result.duplicates.append((key, JSON_KEY_TWICE))
            json_keys.add(key)
        known = result.captions.setdefault(key, [])
        for caption in record.captions or []:
            if caption.strip() and caption in known:
                result.duplicates.append((key, f"caption given twice ({record.where})"))
            else:
                known.append(caption)
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


# --- shard build ---------------------------------------------------------------------------------------

@dataclass
class _Planned:
    index: int
    caption_key: str
    texts: list[str]
    path: Path
    other_keys: list[str] = field(default_factory=list)  # further caption keys naming the same image


MATCH_MODES = ("index", "path")
BUILD_PART_PREFIX = ".build-part-"


class ImageMatcher:
    """Finds the image of a caption key.

    index: the folder is listed once; a key names an image by its relative path without suffix, or by
    its bare stem when that is unique (memory grows with the number of images; images without a
    caption are counted). path: nothing is listed or held; a key is the image's relative path without
    suffix, looked up with a few stat calls (`KEY.jpg`, `KEY.png`, ...), also under a folder named like
    the captions file (img2dataset's `00000.parquet` beside `00000/000000000.jpg`).
    """

    def __init__(self, folder: Path, mode: str):
        self.folder, self.mode = folder, mode
        self.by_name: dict[str, Path] = {}
        self.ambiguous: set[str] = set()
        self.matched: set[Path] = set()
        if mode == "index":
            self.by_name, self.ambiguous = index_images(folder)
        self._suffixes = sorted(IMAGE_SUFFIXES) + sorted(s.upper() for s in IMAGE_SUFFIXES)

    def find(self, key: str, source: Path | None) -> tuple[Path | None, str]:
        """(image path, "") or (None, the reason it has none)."""
        if self.mode == "index":
            path = self.by_name.get(key)
            if path is None:
                return None, "ambiguous image name" if key in self.ambiguous else "missing image"
            self.matched.add(path)
            return path, ""
        relative = Path(key)
        if relative.is_absolute() or ".." in relative.parts or not key.strip():
            return None, "missing image"
        roots = [self.folder] + ([self.folder / source.stem] if source is not None else [])
        for root in roots:
            for suffix in self._suffixes:
                candidate = root / f"{key}{suffix}"
                if candidate.is_file():
                    return candidate, ""
        return None, "missing image"

    def counts(self) -> dict[str, int] | None:
        """Images in the folder and images this process matched (index mode only; None without a listing)."""
        if self.mode != "index":
            return None
        return {"images": len(set(self.by_name.values())), "matched": len(self.matched)}


def images_without_caption(counts: list[dict[str, int] | None]) -> int | None:
    """Images no caption named, from every rank's counts (exact unless one image file is named in the
    chunks of two ranks: then it is counted as used by both)."""
    if not counts or any(c is None for c in counts):
        return None
    return max(counts[0]["images"] - sum(c["matched"] for c in counts), 0)


def _build_job(files: list[Path], images: Path, samples_per_shard: int, match: str, limits: Limits) -> str:
    """What decides a build's output: the captions' content, the image folder, the options."""
    from dftrain.digests import file_sha256, options_sha256

    return options_sha256({"captions": [file_sha256(f) for f in files], "images": str(images.resolve()),
                           "samples_per_shard": samples_per_shard, "match": match, "limits": limits.to_dict()})


def _chunks(entries: Iterator[CaptionEntry], size: int) -> Iterator[tuple[int, list[CaptionEntry]]]:
    """Entries in groups of `size`: chunk j becomes shard j, whichever rank writes it."""
    for number in itertools.count():
        chunk = list(itertools.islice(entries, size))
        if not chunk:
            return
        yield number, chunk


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
    rank: int = 0,
    world_size: int = 1,
    match: str = "index",
) -> BuildReport:
    """Training shards from an image folder and a captions file or folder (dftrain/shards/captions.py).

    The captions are read as a stream and cut into chunks of `samples_per_shard` entries; chunk j
    becomes `shard-{j:06d}.tar` (shorter when entries are skipped; none when all are) and rank r of w
    writes the chunks j with j % w == r, so the shards do not depend on the number of ranks. Within a
    chunk, a key given again and two keys naming one image file become one sample with all their
    captions (warned; repeats further apart than a chunk stay separate samples). Sample keys are the
    entry numbers (`000000042`). Each rank writes a part file; the rank that finds every part writes
    the manifest (merge_build_parts; `shard build --merge` by hand). The limits (dftrain.shards.limits;
    None: this process's) are the ones every reader applies, so nothing stored here is skipped later.
    """
    images, out = Path(images), Path(out)
    limits = limits or current_limits()
    if not images.is_dir():
        raise ConfigError(f"image folder not found: {images}")
    if match not in MATCH_MODES:
        raise ConfigError(f"--match must be one of {', '.join(MATCH_MODES)}, got {match!r}")
    if not 0 <= rank < world_size:
        raise ConfigError(f"invalid rank {rank} of world size {world_size}")
    files = caption_files(captions)  # a missing file or an unknown format: refused before any work
    check_output_folder(out, "shard build", overwrite=overwrite)
    job = _build_job(files, images, samples_per_shard, match, limits)
    matcher = ImageMatcher(images, match)
    report = BuildReport(out)

    def my_temp_files(folder: Path) -> list[Path]:
        return [p for p in folder.glob(f"shard-*.tar{TMP_SUFFIX}")
                if p.name[6:12].isdigit() and int(p.name[6:12]) % world_size == rank]

    with claim_output(out, "shard build", overwrite=overwrite, scope=f"rank{rank}", temp_patterns=my_temp_files):
        (out / MANIFEST_NAME).unlink(missing_ok=True)  # the folder stops looking finished first
        part_path(out, BUILD_PART_PREFIX, rank, world_size).unlink(missing_ok=True)
        shards: list[dict[str, Any]] = []
        entries = 0
        for number, chunk in _chunks(caption_entries(captions), samples_per_shard):
            entries += len(chunk)
            if number % world_size != rank:
                continue
            info = _build_chunk(chunk, out / SHARD_PATTERN.format(index=number), images, matcher, report,
                                strict=strict, workers=workers, limits=limits, on_sample=on_sample)
            if info is not None:
                shards.append(asdict(info))
        write_part(out, BUILD_PART_PREFIX, rank, world_size, {
            "job": job, "shards": shards, "skipped": dict(report.stats.skipped), "duplicates": report.duplicates,
            "captions": entries, "images": matcher.counts()})
    report.written = sum(s["samples"] for s in shards)
    report.shards = len(shards)
    manifest = merge_build_parts(out, world_size, job, command, limits, match)
    report.manifest_written = manifest is not None
    report.waiting_for = [] if manifest else missing_parts(out, BUILD_PART_PREFIX, world_size, job)
    report.unused_images = (manifest.extra.get("images_without_caption") or 0) if manifest else 0
    if report.unused_images:
        log.info("%d image(s) in %s have no caption and were not used", report.unused_images, images)
    return report


def merge_build_parts(out: Path, world_size: int, job: str, command: str, limits: Limits,
                      match: str) -> Manifest | None:
    """The manifest from every rank's part of this job (None while one is missing); tars of an earlier
    build that the parts do not list are removed, then the parts."""
    parts = read_parts(out, BUILD_PART_PREFIX, world_size, job)
    if parts is None:
        return Manifest.load(out) if (out / MANIFEST_NAME).is_file() else None
    shards = sorted((ShardInfo.from_dict(s) for part in parts for s in part["shards"]), key=lambda s: s.name)
    listed = {s.name for s in shards}
    for path in sorted(out.glob("shard-*.tar")):
        if path.name not in listed:
            log.warning("removing %s: an earlier write's shard, not part of the new dataset", path)
            path.unlink()
    skipped: Counter = Counter()
    for part in parts:
        skipped.update(part["skipped"])
    extra = {
        "skipped": dict(sorted(skipped.items())),
        "captions": parts[0]["captions"],
        "images_without_caption": images_without_caption([p["images"] for p in parts]),
        "duplicates": sum(p["duplicates"] for p in parts),
        "match": match,
        "limits": limits.to_dict(),
    }
    manifest = Manifest(kind="train", shards=shards, command=command, extra=extra)
    manifest.save(out)
    remove_parts(out, BUILD_PART_PREFIX, world_size)
    return manifest


def merge_captions_build(images: str | os.PathLike, captions: str | os.PathLike, out: str | os.PathLike, *,
                         samples_per_shard: int, match: str, world_size: int, command: str = "",
                         limits: Limits | None = None) -> Manifest | None:
    """`shard build --merge`: the manifest from the parts of the build these options describe."""
    limits = limits or current_limits()
    job = _build_job(caption_files(captions), Path(images), samples_per_shard, match, limits)
    return merge_build_parts(Path(out), world_size, job, command, limits, match)


def _build_chunk(chunk: list[CaptionEntry], tar: Path, images: Path, matcher: ImageMatcher, report: BuildReport, *,
                 strict: bool, workers: int, limits: Limits, on_sample: Callable[[], None] | None) -> ShardInfo | None:
    """One chunk of entries -> one tar (None when no entry gave a sample)."""
    plan: list[_Planned] = []
    by_key: dict[str, _Planned] = {}
    by_file: dict[tuple[int, int], _Planned] = {}
    for entry in chunk:
        if entry.problem == FAILED_DOWNLOAD:  # img2dataset's own count of what it could not fetch: no error
            report.stats.add(entry.key or entry.where, FAILED_DOWNLOAD)
        elif entry.problem is not None:
            _skip(report, strict, entry.where, "bad caption entry", entry.problem)
        else:
            _plan_entry(entry, plan, by_key, by_file, images, matcher, report, strict, limits)
            if plan and plan[-1].index == entry.index:
                continue  # ticked when written
        _tick(on_sample)

    def samples() -> Iterator[dict[str, Any]]:
        for item, converted in zip(plan, convert_images((p.path for p in plan), workers, limits), strict=True):
            _tick(on_sample)
            if converted[0] == "bad":
                _skip(report, strict, item.caption_key, converted[1], converted[2])
                continue
            _, data, width, height = converted
            key = f"{item.index:09d}"
            meta: dict[str, Any] = {"key": key, "caption_key": item.caption_key, "caption": item.texts[0],
                                    "width": width, "height": height,
                                    "source": item.path.relative_to(images).as_posix()}
            if len(item.texts) > 1:
                meta["captions"] = item.texts
            if item.other_keys:
                meta["other_caption_keys"] = item.other_keys
            yield {"__key__": key, "jpg": data, "txt": item.texts[0], "json": meta}

    if not plan:
        tar.unlink(missing_ok=True)
        return None
    info = write_shard(tar, samples())
    if info.samples == 0:
        tar.unlink()
        return None
    return info


def _plan_entry(entry: CaptionEntry, plan: list[_Planned], by_key: dict[str, _Planned],
                by_file: dict[tuple[int, int], _Planned], images: Path, matcher: ImageMatcher, report: BuildReport,
                strict: bool, limits: Limits) -> None:
    key = str(entry.key)
    for what in entry.repeated:
        _duplicate(report, strict, key, what)
    texts = [text.strip() for text in entry.texts if text.strip()]
    earlier = by_key.get(key)
    if earlier is not None:  # the key again, further on in the same chunk: one sample
        _duplicate(report, strict, key, f"given again ({entry.where}): captions merged into the first")
        earlier.texts.extend(t for t in texts if t not in earlier.texts)
        return
    too_long = _first_problem(limits.check_caption, texts)
    if not texts:
        _skip(report, strict, key, "empty caption")
        return
    if too_long is not None:
        _skip(report, strict, key, too_long.reason, too_long.detail)
        return
    path, reason = matcher.find(key, entry.source)
    if path is None:
        _skip(report, strict, key, reason, f"no unique image named {key}.* in {images}")
        return
    identity = _file_identity(path)
    first = by_file.get(identity)
    if first is not None:  # one image under two keys (nested/x and x, a link): one sample, all captions kept
        _duplicate(report, strict, key, f"names the same image as key {first.caption_key} "
                   f"({path.relative_to(images).as_posix()}): one sample with both keys' captions")
        first.texts.extend(t for t in texts if t not in first.texts)
        first.other_keys.append(key)
        return
    by_file[identity] = by_key[key] = planned = _Planned(entry.index, key, texts, path)
    plan.append(planned)


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
