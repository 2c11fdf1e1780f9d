"""Shared fixtures for the shard tests: small JPEGs, datasets, and ways to damage a tar."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from dftrain.shards import ShardWriter


def make_jpeg(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_png(seed: int, size: int = 20, mode: str = "RGBA") -> bytes:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    pixels = rng.integers(0, 256, size=(size, size + 3, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


def key_of(i: int) -> str:
    return f"{i:09d}"


def train_sample(i: int) -> dict:
    key = key_of(i)
    return {"__key__": key, "jpg": make_jpeg(i), "txt": f"caption {i} – café №{i}", "json": {"key": key, "i": i}}


def write_dataset(folder: Path, n: int = 10, per_shard: int = 4, bad: dict | None = None) -> list[dict]:
    """Write n train samples; `bad` maps index -> replacement fields (None value removes the field)."""
    samples = []
    with ShardWriter(folder, samples_per_shard=per_shard, kind="train", command="test") as writer:
        for i in range(n):
            sample = train_sample(i)
            for field, value in (bad or {}).get(i, {}).items():
                if value is None:
                    sample.pop(field)
                else:
                    sample[field] = value
            writer.write(sample)
            samples.append(sample)
    return samples


def member_offset(tar_path: Path, member_name: str) -> tuple[int, int]:
    """(offset of the member's data in the file, its size)."""
    with tarfile.open(tar_path) as tar:
        info = tar.getmember(member_name)
        return info.offset_data, info.size


def header_offset(tar_path: Path, member_name: str) -> int:
    with tarfile.open(tar_path) as tar:
        return tar.getmember(member_name).offset


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)
