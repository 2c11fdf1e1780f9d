"""Shard write and read throughput, side by side with plain webdataset / tarfile baselines.

    .venv/bin/python -m benchmarks.bench_shards [--quick]

Measured (single process = one core; best of `repeats` runs, the machine is shared):
- write: dftrain ShardWriter (atomic, hashed, deterministic) vs webdataset.TarWriter, same samples;
- read raw (no decode): dftrain iter_samples(decode=False) vs a bare tarfile loop vs webdataset.WebDataset;
- read + decode + 256-px random crop: dftrain iter_samples vs webdataset .decode("pil"), on 320-px JPEGs.
Writes benchmarks/results/shards.json.
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
CROP = 256


def _photo_like_jpeg(rng: np.random.Generator, size: int) -> bytes:
    """A smooth gradient with a few blobs and mild noise: compresses like a photo, not like noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.zeros((size, size, 3), np.float32)
    for channel in range(3):
        a, b, c = rng.uniform(0, 255, 3)
        image[..., channel] = a * x + b * y + c * (1 - x) * (1 - y)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.3)]
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        image[mask] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def photo_samples(n: int, size: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"__key__": f"{i:09d}", "jpg": _photo_like_jpeg(rng, size), "txt": f"photo {i} of a thing in a place",
         "json": {"key": f"{i:09d}", "width": size, "height": size}}
        for i in range(n)
    ]


def synthetic_samples(n: int) -> tuple[list[dict], str]:
    """The embedded synthetic dataset when dftrain.synthetic is importable, else photo-like 64-px JPEGs."""
    try:
        from dftrain.synthetic import synthetic_train_samples
    except ImportError:
        return photo_samples(n, 64, seed=1), "photo-like 64 px (dftrain.synthetic not available)"
    return list(synthetic_train_samples(n=n, size=64, dup_fraction=0.1, seed=0)), "dftrain.synthetic 64 px"


def best_time(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """(best seconds, items of the last run)."""
    best, items = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        items = fn()
        best = min(best, time.perf_counter() - started)
    return best, items


def rate(seconds: float, items: int, nbytes: int) -> dict:
    return {"seconds": round(seconds, 4), "samples": items, "samples_per_s": round(items / seconds, 1),
            "mb_per_s": round(nbytes / seconds / 1e6, 2)}


def payload_bytes(samples: list[dict]) -> int:
    return sum(len(s["jpg"]) + len(s["txt"].encode()) + len(json.dumps(s["json"])) for s in samples)


# --- the contenders -----------------------------------------------------------------------------------

def write_dftrain(samples: list[dict], out: Path, per_shard: int) -> int:
    from dftrain.shards import ShardWriter

    with ShardWriter(out, samples_per_shard=per_shard) as writer:
        for sample in samples:
            writer.write(sample)
    return len(samples)


def write_webdataset(samples: list[dict], out: Path, per_shard: int) -> int:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(samples), per_shard):
        with wds.TarWriter(str(out / f"shard-{start // per_shard:06d}.tar")) as writer:
            for sample in samples[start:start + per_shard]:
                writer.write({**sample, "json": json.dumps(sample["json"]).encode()})
    return len(samples)


def read_dftrain(folder: Path, decode: bool, crop: bool) -> int:
    from dftrain.shards import iter_samples

    rng = random.Random(0)
    count = 0
    for sample in iter_samples(folder, rank=0, world_size=1, decode=decode):
        if crop:
            random_crop(sample["image"], rng)
        count += 1
    return count


def read_tarfile(folder: Path) -> int:
    """Baseline: read every member's bytes with tarfile, no grouping checks, no decode."""
    count = 0
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path, "r|") as tar:
            for member in tar:
                if member.isfile():
                    tar.extractfile(member).read()
                    count += member.name.endswith(".jpg")
    return count


def read_webdataset(folder: Path, decode: bool, crop: bool) -> int:
    import webdataset as wds

    urls = [str(p) for p in sorted(folder.glob("*.tar"))]
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    if decode:
        dataset = dataset.decode("pil")
    rng = random.Random(0)
    count = 0
    for sample in dataset:
        if crop:
            random_crop(sample["jpg"], rng)
        count += 1
    return count


def random_crop(image: Image.Image, rng: random.Random) -> Image.Image:
    width, height = image.size
    left, top = rng.randint(0, max(width - CROP, 0)), rng.randint(0, max(height - CROP, 0))
    return image.crop((left, top, left + CROP, top + CROP))


# --- main ---------------------------------------------------------------------------------------------

def main(quick: bool = False) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    n_small, n_photo, repeats = (300, 60, 2) if quick else (3000, 600, 3)
    per_shard = 100 if quick else 500
    small, source = synthetic_samples(n_small)
    photos = photo_samples(n_photo, 320)
    result: dict = {"config": {"quick": quick, "n_synthetic": len(small), "n_photo_320": n_photo,
                               "samples_per_shard": per_shard, "repeats": repeats, "synthetic_source": source,
                               "crop": CROP, "processes": 1}}
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        tmp = Path(tmp)
        small_bytes, photo_bytes = payload_bytes(small), payload_bytes(photos)

        def timed_write(fn, name):
            counter = iter(range(1000))
            return best_time(lambda: fn(small, tmp / f"{name}{next(counter)}", per_shard), repeats)

        ours = rate(*timed_write(write_dftrain, "w_ours"), small_bytes)
        theirs = rate(*timed_write(write_webdataset, "w_wds"), small_bytes)
        result["write"] = {"dftrain": ours, "webdataset_tarwriter": theirs,
                           "ratio_dftrain_vs_webdataset": round(ours["samples_per_s"] / theirs["samples_per_s"], 3)}

        folder = tmp / "w_ours0"
        raw_ours = rate(*best_time(lambda: read_dftrain(folder, False, False), repeats), small_bytes)
        raw_tar = rate(*best_time(lambda: read_tarfile(folder), repeats), small_bytes)
        raw_wds = rate(*best_time(lambda: read_webdataset(folder, False, False), repeats), small_bytes)
        dec_ours = rate(*best_time(lambda: read_dftrain(folder, True, False), repeats), small_bytes)
        dec_wds = rate(*best_time(lambda: read_webdataset(folder, True, False), repeats), small_bytes)
        result["read_synthetic_64"] = {
            "raw_dftrain": raw_ours, "raw_tarfile_only": raw_tar, "raw_webdataset": raw_wds,
            "decode_dftrain": dec_ours, "decode_webdataset": dec_wds,
            "ratio_raw_dftrain_vs_tarfile": round(raw_ours["samples_per_s"] / raw_tar["samples_per_s"], 3),
            "ratio_raw_dftrain_vs_webdataset": round(raw_ours["samples_per_s"] / raw_wds["samples_per_s"], 3),
            "ratio_decode_dftrain_vs_webdataset": round(dec_ours["samples_per_s"] / dec_wds["samples_per_s"], 3),
        }

        photo_dir = tmp / "photos"
        write_dftrain(photos, photo_dir, per_shard)
        crop_ours = rate(*best_time(lambda: read_dftrain(photo_dir, True, True), repeats), photo_bytes)
        crop_wds = rate(*best_time(lambda: read_webdataset(photo_dir, True, True), repeats), photo_bytes)
        result["read_decode_crop256_320px_per_core"] = {
            "dftrain": crop_ours, "webdataset": crop_wds,
            "ratio_dftrain_vs_webdataset": round(crop_ours["samples_per_s"] / crop_wds["samples_per_s"], 3),
            "mean_jpeg_kb": round(sum(len(s["jpg"]) for s in photos) / len(photos) / 1e3, 1),
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shards.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
