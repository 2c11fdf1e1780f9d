"""Synthetic samples (writer-ready dicts) and `write_synthetic`, which shards them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dftrain.errors import ConfigError
from dftrain.synthetic.backgrounds import random_background
from dftrain.synthetic.captions import specific_caption, vary_caption
from dftrain.synthetic.encoding import check_size, jpeg_bytes
from dftrain.synthetic.objects import OBJECT_CLASS_SYNONYMS, OBJECT_CLASSES, draw_object
from dftrain.synthetic.palette import NAMED_COLOURS, jitter, pick_contrasting
from dftrain.synthetic.shapes import SHAPES

log = logging.getLogger("dftrain.synthetic")

# Bump when the drawing or caption code changes what a seed produces.
GENERATOR_VERSION = 1
# Bump when the object bank's samples or manifest change for the same seed (2: class synonyms).
OBJECT_BANK_VERSION = 2
SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges at 64 px
OBJECT_CLASS_NAMES = [name for name, _ in OBJECT_CLASSES]

# RNG stream ids, so train images, their copies and objects never share random numbers.
_STREAM_TRAIN_IMAGE, _STREAM_TRAIN_COPY, _STREAM_OBJECT, _STREAM_PLAN = 1, 2, 3, 4


def _rng(seed: int, stream: int, *index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, *(int(i) for i in index)])


# -- training images ---------------------------------------------------------------------------


def render_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, dict[str, str]]:
    """A background with 2-3 shapes; returns the image and its visible content for the caption."""
    canvas_size = size * SUPERSAMPLE
    background = random_background(rng, canvas_size)
    canvas = background.image
    shapes = list(SHAPES)
    drawn: list[tuple[str, str]] = []
    count = int(rng.integers(2, 4))
    # Secondary shapes first (small), the main shape last so it is never hidden.
    for position in range(count):
        is_main = position == count - 1
        name = shapes[int(rng.integers(len(shapes)))]
        colour_name = pick_contrasting(rng, background.colours)
        radius = canvas_size * (rng.uniform(0.22, 0.36) if is_main else rng.uniform(0.1, 0.18))
        cx, cy = (float(rng.uniform(radius, canvas_size - radius)) for _ in range(2))
        mask = Image.new("L", canvas.size, 0)
        SHAPES[name](ImageDraw.Draw(mask), cx, cy, radius, float(rng.uniform(0, 2 * np.pi)))
        fill = Image.new("RGB", canvas.size, jitter(NAMED_COLOURS[colour_name], rng))
        canvas = Image.composite(fill, canvas, mask)
        drawn.append((colour_name, name))
    image = canvas.resize((size, size), Image.LANCZOS)
    main, second = drawn[-1], drawn[0]
    visible = {"colour": main[0], "shape": main[1], "colour2": second[0], "shape2": second[1], "bg": background.style}
    return image, visible


def plan_duplicate_groups(n: int, dup_fraction: float, seed: int, copies: tuple[int, int] = (3, 6)) -> list[int]:
    """Copies per unique image so that the copies sum to exactly `n` and a fraction
    `dup_fraction` of the unique images has more than one copy (3-6 each, as web re-uploads).

    Returns one count per unique image (group); groups with a count > 1 are duplicated.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if not 0.0 <= dup_fraction <= 1.0:
        raise ConfigError(f"dup_fraction must be in [0, 1], got {dup_fraction}")
    rng = _rng(seed, _STREAM_PLAN)
    draws = rng.integers(copies[0], copies[1] + 1, size=n).tolist()
    # Smallest number of unique images whose planned copies reach n.
    for unique in range(1, n + 1):
        duplicated = int(round(dup_fraction * unique))
        total = unique - duplicated + sum(draws[:duplicated])
        if total >= n:
            break
    counts = draws[:duplicated] + [1] * (unique - duplicated)
    # Trim the overshoot from the duplicated groups (never below 2 copies, so they stay duplicates).
    overshoot = sum(counts) - n
    for floor in (2, 1):  # tiny n: if 2 copies each is still too many, some groups become singles
        for group in reversed(range(duplicated)):
            removable = min(overshoot, counts[group] - floor)
            counts[group] -= removable
            overshoot -= removable
    # Spread duplicated groups among the singles (deterministically), like a web crawl.
    order = rng.permutation(len(counts))
    return [counts[i] for i in order]


def _near_duplicate(image: Image.Image, rng: np.random.Generator) -> bytes:
    """A re-upload: same picture, slightly different brightness and JPEG quality."""
    pixels = np.asarray(image, dtype=np.int16) + int(rng.integers(-6, 7))
    return jpeg_bytes(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), int(rng.integers(75, 96)))


def synthetic_train_samples(n: int = 300, size: int = 64, dup_fraction: float = 0.1, seed: int = 0) -> Iterator[dict]:
    """`n` writer-ready samples {"__key__", "jpg", "txt", "json"}; duplicated groups share `json.group`.

    Copy 0 of a group is the canonical image; other copies are byte-identical or near-identical
    (half each), with captions that sometimes vary slightly, as re-uploads on the web do.
    """
    check_size(size)
    counts = plan_duplicate_groups(n, dup_fraction, seed)
    slots = [(group, copy) for group, count in enumerate(counts) for copy in range(count)]
    order = _rng(seed, _STREAM_PLAN, 1).permutation(len(slots))
    cache: dict[int, tuple[Image.Image, bytes, str]] = {}  # duplicated groups only
    for index, slot in enumerate(order):
        group, copy = slots[slot]
        if group in cache:
            image, canonical, caption = cache[group]
        else:
            image_rng = _rng(seed, _STREAM_TRAIN_IMAGE, group)
            image, visible = render_scene(image_rng, size)
            canonical = jpeg_bytes(image)
            caption = specific_caption(image_rng, visible)
            if counts[group] > 1:
                cache[group] = (image, canonical, caption)
        jpg, text = canonical, caption
        if copy > 0:
            copy_rng = _rng(seed, _STREAM_TRAIN_COPY, group, copy)
            if copy_rng.random() < 0.5:
                jpg = _near_duplicate(image, copy_rng)
            text = vary_caption(caption, copy_rng)
        key = f"{index:09d}"
        yield {
            "__key__": key,
            "jpg": jpg,
            "txt": text,
            "json": {
                "key": key,
                "caption": text,
                "width": size,
                "height": size,
                "source": "synthetic",
                "group": group,
                "copy": copy,
                "copies": counts[group],
            },
        }


# -- object bank -------------------------------------------------------------------------------


def render_object(class_id: int, rng: np.random.Generator, size: int) -> Image.Image:
    """One object of class `class_id` on a light, varied background."""
    canvas_size = size * SUPERSAMPLE
    background = random_background(
        rng, canvas_size, styles=("solid", "gradient", "noise", "radial"), palettes=("pastel", "light")
    )
    return draw_object(class_id, rng, background.image).resize((size, size), Image.LANCZOS)


def synthetic_object_samples(n_per_class: int = 20, size: int = 64, seed: int = 0) -> Iterator[dict]:
    """`n_per_class` samples of each object class, classes interleaved (any prefix holds every class).

    Fields: `__key__`, `jpg`, `cls` (class id as text), `json` {key, class_id, class_name, and
    class_synonyms when the class has several names (OBJECT_CLASS_SYNONYMS), as `dftrain shard objects`
    writes them from words.txt}.
    """
    check_size(size)
    if n_per_class < 1:
        raise ConfigError(f"n_per_class must be >= 1, got {n_per_class}")
    for instance in range(n_per_class):
        for class_id, class_name in enumerate(OBJECT_CLASS_NAMES):
            image = render_object(class_id, _rng(seed, _STREAM_OBJECT, class_id, instance), size)
            key = f"{instance * len(OBJECT_CLASS_NAMES) + class_id:09d}"
            meta = {"key": key, "class_id": class_id, "class_name": class_name}
            if len(OBJECT_CLASS_SYNONYMS[class_name]) > 1:
                meta["class_synonyms"] = list(OBJECT_CLASS_SYNONYMS[class_name])
            yield {"__key__": key, "jpg": jpeg_bytes(image), "cls": str(class_id), "json": meta}


def object_bank_classes(objects_per_class: int) -> list[dict]:
    """The bank's classes as its manifest records them (`dftrain shard objects`' form): id, name,
    samples and, where there are several, the synonyms."""
    return [{"class_id": class_id, "class_name": name, "samples": objects_per_class,
             **({"class_synonyms": list(OBJECT_CLASS_SYNONYMS[name])} if len(OBJECT_CLASS_SYNONYMS[name]) > 1 else {})}
            for class_id, name in enumerate(OBJECT_CLASS_NAMES)]


def _object_bank_extra(seed: int, size: int, objects_per_class: int) -> dict:
    return {"generator": "dftrain.synthetic", "generator_version": GENERATOR_VERSION,
            "object_bank_version": OBJECT_BANK_VERSION, "seed": seed, "size": size,
            "objects_per_class": objects_per_class, "classes": object_bank_classes(objects_per_class)}


# -- writing -----------------------------------------------------------------------------------


def _already_written(folder: Path, extra: dict) -> bool:
    """True when `folder` holds a finished dataset written with exactly these parameters."""
    from dftrain.shards import Manifest, ShardError

    try:
        manifest = Manifest.load(folder)
    except ShardError:
        return False
    if manifest.extra != extra:
        return False
    return all(path.is_file() and path.stat().st_size == info.bytes
               for path, info in zip(manifest.shard_paths(folder), manifest.shards, strict=True))


def write_synthetic(
    out_dir: str | os.PathLike,
    n: int = 300,
    size: int = 64,
    dup_fraction: float = 0.1,
    seed: int = 0,
    samples_per_shard: int = 100,
    objects_per_class: int = 20,
    command: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write out_dir/train and out_dir/objects (webdataset shards + manifest); returns their paths.

    Idempotent: a folder already holding this exact dataset (same parameters in its manifest,
    shard files present) is left alone; otherwise it is rewritten, and the deterministic tars
    come out byte-identical.
    """
    out_dir = Path(out_dir)
    if command is None:
        command = (
            f"dftrain shard synthetic --out {out_dir} --n {n} --size {size} --dup-fraction {dup_fraction} "
            f"--seed {seed} --samples-per-shard {samples_per_shard} --objects-per-class {objects_per_class}"
        )
    common = {"generator": "dftrain.synthetic", "generator_version": GENERATOR_VERSION, "seed": seed, "size": size}
    jobs = {
        "train": ({**common, "n": n, "dup_fraction": dup_fraction},
                  lambda: synthetic_train_samples(n, size, dup_fraction, seed)),
        "objects": (_object_bank_extra(seed, size, objects_per_class),
                    lambda: synthetic_object_samples(objects_per_class, size, seed)),
    }
    return _write_sets(out_dir, jobs, samples_per_shard, command, overwrite)


def _write_sets(out_dir: Path, jobs: dict, samples_per_shard: int, command: str,
                overwrite: bool) -> dict[str, Path]:
    """Write out_dir/<kind> for each job {kind: (manifest extra, samples factory)}, skipping finished ones."""
    from dftrain.outputs import claim_output
    from dftrain.shards import ShardWriter

    paths = {}
    with claim_output(out_dir, "shard synthetic", overwrite=overwrite):
        for kind, (extra, samples) in jobs.items():
            folder = out_dir / kind
            paths[kind] = folder
            extra = {**extra, "samples_per_shard": samples_per_shard}
            if _already_written(folder, extra):
                log.info("%s already holds this synthetic %s set; left as is", folder, kind)
                continue
            writer_kind = "train" if kind == "heldout" else kind
            with ShardWriter(folder, samples_per_shard=samples_per_shard, kind=writer_kind, command=command,
                             extra=extra) as writer:
                for sample in samples():
                    writer.write(sample)
            log.info("wrote %d %s samples to %s", writer.samples_written, kind, folder)
    return paths


def write_regime(
    out_dir: str | os.PathLike,
    n: int = 800,
    dup_images: int = 20,
    dup_factor: int = 25,
    heldout: int = 200,
    size: int = 32,
    seed: int = 0,
    samples_per_shard: int = 100,
    objects_per_class: int = 20,
    command: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """The memorization regime (dftrain.synthetic.regime): out_dir/train, out_dir/heldout (when
    heldout > 0) and out_dir/objects; idempotent like write_synthetic."""
    from dftrain.synthetic.regime import (
        REGIME_VERSION,
        check_regime,
        regime_heldout_samples,
        regime_train_samples,
    )

    check_size(size)
    check_regime(n, dup_images, dup_factor, heldout)
    out_dir = Path(out_dir)
    if command is None:
        command = (f"dftrain shard synthetic --out {out_dir} --n {n} --dup-images {dup_images} --dup-factor "
                   f"{dup_factor} --heldout {heldout} --size {size} --seed {seed} --samples-per-shard "
                   f"{samples_per_shard} --objects-per-class {objects_per_class}")
    common = {"generator": "dftrain.synthetic.regime", "generator_version": REGIME_VERSION, "seed": seed, "size": size}
    jobs = {
        "train": ({**common, "n": n, "dup_images": dup_images, "dup_factor": dup_factor},
                  lambda: regime_train_samples(n, dup_images, dup_factor, size, seed)),
        "objects": (_object_bank_extra(seed, size, objects_per_class),
                    lambda: synthetic_object_samples(objects_per_class, size, seed)),
    }
    if heldout:
        jobs["heldout"] = ({**common, "n": heldout, "heldout": True}, lambda: regime_heldout_samples(heldout, size, seed))
    return _write_sets(out_dir, jobs, samples_per_shard, command, overwrite)
