"""Shared fixtures for the shard tests: small JPEGs, datasets, and ways to damage a tar."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from dftrain.shards import ShardWriter

# `dftrain ARGS` with a pause after every written sample, so a test can act mid-shard (kill the build,
# start a second one). The pause is patched in here: library code has no test hook.
_SLOW_DFTRAIN = """
import sys, time
from dftrain.shards.writer import _TarShard
delay, sys.argv = float(sys.argv[1]), ["dftrain", *sys.argv[2:]]
add = _TarShard.add  # every tar writer's per-sample step (ShardWriter and write_shard)
def slow_add(self, sample):
    add(self, sample)
    time.sleep(delay)
_TarShard.add = slow_add
from dftrain.cli import main
main()
"""


def slow_dftrain(delay: float, *args: str) -> list[str]:
    import sys

    return [sys.executable, "-c", _SLOW_DFTRAIN, str(delay), *args]


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


# --- crafted bad inputs (small files that claim huge sizes) --------------------------------------

def tar_header(name: str, size: int) -> bytes:
    """One tar header block (pax if needed) for a regular-file member claiming `size` bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    return info.tobuf(format=tarfile.PAX_FORMAT)


def tar_member(name: str, data: bytes) -> bytes:
    pad = -len(data) % 512
    return tar_header(name, len(data)) + data + b"\0" * pad


def write_raw_tar(path: Path, members: list[tuple[str, bytes]], end: bool = True) -> Path:
    """A tar written member by member (any names, no checks), as a foreign tool could write it."""
    with open(path, "wb") as handle:
        for name, data in members:
            handle.write(tar_member(name, data))
        if end:
            handle.write(b"\0" * 1024)
    return path


def write_tar_with_huge_member(path: Path, good: list[tuple[str, bytes]], name: str, size: int,
                               sparse: bool = False) -> Path:
    """Good members, then one whose header claims `size` bytes. sparse=True writes a valid tar whose
    member really holds `size` zero bytes as a hole in the file (nothing is stored on disk), followed
    by one more good sample; sparse=False ends the file right after the header (a lying header)."""
    with open(path, "wb") as handle:
        for member, data in good:
            handle.write(tar_member(member, data))
        handle.write(tar_header(name, size))
        if sparse:
            handle.seek(handle.tell() + size + (-size % 512))
            handle.write(tar_member("999999999.txt", b"after the hole"))
            handle.write(tar_member("999999999.jpg", make_jpeg(99)))
            handle.write(b"\0" * 1024)
    return path


def jpeg_claiming(width: int, height: int, seed: int = 0) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to claim width x height pixels."""
    data = bytearray(make_jpeg(seed, size=8))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def img2dataset_folder(root: Path, shards: int = 3, per_shard: int = 4) -> Path:
    """What img2dataset writes: 00000.tar (000000000.jpg/.txt/.json), 00000.parquet, 00000_stats.json."""
    root.mkdir(parents=True)
    for s in range(shards):
        members = []
        for i in range(per_shard):
            key = f"{s:05d}{i:04d}"
            meta = {"url": f"https://example.com/{key}.jpg", "key": key, "status": "success", "width": 24,
                    "height": 24, "caption": f"photo {key}", "exif": "{}", "original_width": 640}
            members += [(f"{key}.jpg", make_jpeg(s * 100 + i)), (f"{key}.txt", f"photo {key}".encode()),
                        (f"{key}.json", json.dumps(meta).encode())]
        write_raw_tar(root / f"{s:05d}.tar", members)
        (root / f"{s:05d}.parquet").write_bytes(b"PAR1 not read by adopt PAR1")
        (root / f"{s:05d}_stats.json").write_text(json.dumps(
            {"count": per_shard + 2, "successes": per_shard, "failed_to_download": 1, "failed_to_resize": 1,
             "start_time": 0, "status_dict": {"success": per_shard}}))
    return root
