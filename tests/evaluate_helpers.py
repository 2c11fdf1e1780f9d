"""Fixtures for the evaluate tests: training shards of random scenes, planted-copy generations."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from dftrain.evaluate import augment as aug
from dftrain.evaluate.augment import random_scene


def jpeg_bytes(img: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def scene_images(n: int, seed: int, size: int = 96) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, size) for _ in range(n)]


def write_train_shards(out_dir: Path, images: list[Image.Image], captions: list[str] | None = None,
                       orig_captions: list[str] | None = None, samples_per_shard: int = 16) -> list[str]:
    """Training shards (dftrain.shards format) with keys 000000, 000001, ...; returns the keys."""
    from dftrain.shards import ShardWriter

    keys = []
    with ShardWriter(out_dir, samples_per_shard=samples_per_shard, kind="train") as writer:
        for i, img in enumerate(images):
            key = f"{i:06d}"
            caption = captions[i] if captions else f"caption {i}"
            meta = {"key": key, "caption": caption}
            if orig_captions:
                meta["orig_caption"] = orig_captions[i]
            writer.write({"__key__": key, "jpg": jpeg_bytes(img), "txt": caption, "json": meta})
            keys.append(key)
    return keys


def write_generations(gen_dir: Path, images: list[Image.Image], train_keys: list[str | None],
                      prompts: list[str | None] | None = None) -> list[str]:
    """A generations folder: PNG files + prompts.jsonl; returns the file names."""
    gen_dir.mkdir(parents=True, exist_ok=True)
    files = []
    with (gen_dir / "prompts.jsonl").open("w") as f:
        for i, (img, key) in enumerate(zip(images, train_keys, strict=True)):
            name = f"{i:06d}.png"
            img.save(gen_dir / name)
            prompt = prompts[i] if prompts else None
            f.write(json.dumps({"file": name, "prompt": prompt, "train_key": key, "seed": i}) + "\n")
            files.append(name)
    return files


def planted_copy(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """All five augmentations at once, milder than each alone (crop >= 0.8 area, JPEG >= 50)."""
    out = aug.mirror(aug.random_crop(img, rng, min_area=0.8))
    return aug.jpeg(aug.colour_jitter(aug.resize(out, rng), rng, 0.2), rng, 50, 90)


def planted_set(tmp: Path, n_train: int = 24, n_copies: int = 8, n_unrelated: int = 8, seed: int = 0):
    """Training shards of scenes; generations = augmented copies of the first n_copies + unrelated scenes."""
    train_imgs = scene_images(n_train, seed)
    keys = write_train_shards(tmp / "train", train_imgs)
    rng = np.random.default_rng(seed + 1)
    copies = [planted_copy(train_imgs[i], rng) for i in range(n_copies)]
    unrelated = scene_images(n_unrelated, seed + 1000)
    write_generations(tmp / "gen", copies + unrelated, keys[:n_copies] + [None] * n_unrelated)
    return train_imgs, keys

