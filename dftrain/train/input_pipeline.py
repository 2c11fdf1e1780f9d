"""The input pipeline around the step: processes that decode training images ahead of it
(`dftrain train --num-workers N`), and the copy of each batch to the device.

Decoding workers are spawned, not forked: the training process holds OpenMP and gloo threads, which a forked
child could deadlock on. They ignore SIGINT and SIGTERM: launchers signal a rank's whole process group
(torchrun's killpg, SLURM's --signal, Ctrl-C in a terminal), and the rank still needs decoded images
to finish its step and save its checkpoint before it stops; it shuts its pool down itself. A worker
whose training process is gone (SIGKILL, out of memory) exits on its own, since nothing else would
end it: it would wait on the pool's queue forever.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PARENT_POLL_S = 0.5
# Images per task: one task per image cost the training process ~0.25-0.35 ms of CPU per 256-px image in
# queue and pickling overhead, four per task ~0.15 ms (benchmarks/RESULTS.md); more gained little.
DECODE_CHUNK = 4


class UndecodableImage(Exception):
    """A worker's decoding error, as its message (any exception type PIL raises pickles as this one)."""


def crop_image(jpg: bytes, resolution: int):
    """JPEG bytes -> uint8 array [R, R, 3]: the decoding work, which --num-workers moves to other processes."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(jpg)) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = resolution / min(w, h)
        if scale != 1.0:
            im = im.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        im = im.crop((left, top, left + resolution, top + resolution))
        return np.asarray(im, dtype=np.uint8).copy()


def decode_crops(jpgs: list[bytes], resolution: int) -> list:
    """In a worker: each JPEG's uint8 crop (crop_image), or the error it raised."""
    crops = []
    for jpg in jpgs:
        try:
            crops.append(crop_image(jpg, resolution))
        except Exception as exc:  # PIL raises many types for a bad image; the training process counts it
            crops.append(UndecodableImage(str(exc)))
    return crops


def returned_or_raised(result):
    if isinstance(result, BaseException):
        raise result
    return result


def start_pool(num_workers: int) -> ProcessPoolExecutor:
    from dftrain.processes import worker_context

    return ProcessPoolExecutor(num_workers, mp_context=worker_context(),
                               initializer=_init_worker, initargs=(os.getpid(),))


def _init_worker(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True, name="exit-with-parent").start()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def pins_memory(device) -> bool:
    """Page-locked host batches pay off only when a CUDA copy can then run asynchronously."""
    return device.type == "cuda"


def to_device(tensor, device, dtype=None):
    """`tensor.to(device, dtype)`; on CUDA through pinned memory with a non-blocking copy (the dtype is
    converted on the device, so the copy moves the host tensor as it is)."""
    if not pins_memory(device):
        return tensor.to(device, dtype)
    moved = tensor.pin_memory().to(device, non_blocking=True)
    return moved if dtype is None else moved.to(dtype)
