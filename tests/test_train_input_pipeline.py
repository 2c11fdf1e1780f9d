"""The input pipeline around the step (dftrain/train/input_pipeline.py): decoding workers that outlive a
launcher's signals and not their training process, a dead worker reported as such, decoding two batches
ahead, pinned copies on CUDA only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_helpers import REPO, RESOLUTION, build_test_shards

from dftrain.train import input_pipeline
from dftrain.train.data import TrainStream


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    train, _ = build_test_shards(tmp_path_factory.mktemp("pipeline"), n_train=16, n_per_class=1)
    return train


def stream(shards, num_workers: int, **extra) -> TrainStream:
    return TrainStream(shards, rank=0, world_size=1, resolution=RESOLUTION, precomputed=False, shuffle_buffer=4, seed=3,
                       num_workers=num_workers, **extra)


def decoding_workers(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children() if "spawn_main" in " ".join(p.cmdline())]


def gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_same_examples(got: list[dict], expected: list[dict]) -> None:
    assert [e["key"] for e in got] == [e["key"] for e in expected]
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(got, expected, strict=True))


def test_workers_keep_decoding_after_the_signals_a_launcher_sends_the_rank(shards):
    """torchrun (killpg), SLURM and Ctrl-C signal the rank's whole process group; the rank must still get
    its images to finish the step and save its checkpoint (before: BrokenProcessPool, no checkpoint)."""
    expected = stream(shards, 0).next_batch(14)
    with_workers = stream(shards, 1)
    try:
        first = with_workers.next_batch(2)
        (worker,) = decoding_workers(os.getpid())
        os.kill(worker, signal.SIGTERM)
        os.kill(worker, signal.SIGINT)
        time.sleep(0.3)
        later = with_workers.next_batch(12)  # more than was decoded ahead before the signals
        assert not gone(worker)
    finally:
        with_workers.close()
    assert_same_examples(first + later, expected)


def test_a_dead_worker_stops_the_run_with_one_line_not_skipped_samples(shards):
    """A worker killed (out of memory) is not a bad image: nothing is counted as skipped, and the error says
    how to go on (before: its pending images were counted as undecodable, then a BrokenProcessPool traceback)."""
    from dftrain.errors import DftrainError

    s = stream(shards, 1)
    try:
        s.next_batch(2)
        (worker,) = decoding_workers(os.getpid())
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(DftrainError, match="decoding worker process died.*--resume auto"):
            s.next_batch(14)
    finally:
        s.close()
    assert s.stats.total_skipped == 0


def test_a_worker_exits_when_its_training_process_is_killed(shards):
    script = (
        "import sys; from dftrain.train.data import TrainStream\n"
        f"s = TrainStream({str(shards)!r}, rank=0, world_size=1, resolution={RESOLUTION}, precomputed=False, num_workers=1)\n"
        "s.next_batch(2); print('ready', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        assert proc.stdout.readline().strip() == "ready"
        (worker,) = decoding_workers(proc.pid)
        proc.kill()  # SIGKILL: no shutdown of the pool, nothing signals the worker
        proc.wait(timeout=30)
        deadline = time.time() + 10 * input_pipeline.PARENT_POLL_S + 5
        while not gone(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert gone(worker), "the decoding worker outlived its training process"
    finally:
        proc.kill()
        if "worker" in locals() and not gone(worker):
            os.kill(worker, signal.SIGKILL)


def test_decoding_runs_two_batches_ahead_of_the_step(shards, monkeypatch):
    """While the step runs on one batch, the next two are in the workers' hands (not only `prefetch` images:
    a large batch would otherwise decode after the step, in the step's time)."""
    submitted = []
    start_pool = input_pipeline.start_pool

    class CountingPool:
        def __init__(self, n):
            self.pool = start_pool(n)

        def submit(self, fn, jpgs, resolution):
            submitted.extend(jpgs)
            return self.pool.submit(fn, jpgs, resolution)

        def shutdown(self, **kwargs):
            self.pool.shutdown(**kwargs)

    monkeypatch.setattr(input_pipeline, "start_pool", CountingPool)
    s = stream(shards, 1, prefetch=1)
    try:
        batch = s.next_batch(3)
        assert len(submitted) >= 3 + 2 * 3
    finally:
        s.close()
    assert_same_examples(batch, stream(shards, 0).next_batch(3))


def test_batches_are_pinned_only_for_cuda():
    assert input_pipeline.pins_memory(torch.device("cuda", 0))
    assert not input_pipeline.pins_memory(torch.device("cpu"))
    x = torch.arange(6.0).view(2, 3)
    moved = input_pipeline.to_device(x, torch.device("cpu"), torch.bfloat16)
    assert moved.dtype == torch.bfloat16 and torch.equal(moved.float(), x)


def test_a_cuda_copy_goes_through_pinned_memory_without_blocking():
    calls = []

    class HostTensor:
        def __init__(self, name):
            self.name = name

        def pin_memory(self):
            calls.append((self.name, "pin_memory"))
            return HostTensor("pinned")

        def to(self, *args, **kwargs):
            calls.append((self.name, "to", args, kwargs))
            return HostTensor("moved")

    cuda = torch.device("cuda", 0)
    input_pipeline.to_device(HostTensor("batch"), cuda, torch.bfloat16)
    assert calls == [("batch", "pin_memory"), ("pinned", "to", (cuda,), {"non_blocking": True}),
                     ("moved", "to", (torch.bfloat16,), {})]


def test_pixels_are_the_image_bytes_scaled_to_minus_one_one():
    """The fast conversion (transpose bytes, convert in place) gives exactly the plain formula's values."""
    import numpy as np

    from dftrain.train.data import pixels_from_crop

    array = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    expected = torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    pixels = pixels_from_crop(array)
    assert pixels.is_contiguous() and pixels.dtype == torch.float32 and torch.equal(pixels, expected)
    assert pixels.min() >= -1 and pixels.max() <= 1


def test_an_undecodable_image_is_skipped_and_counted_by_key_the_same_with_workers(tmp_path):
    """A truncated JPEG decoded in a worker (several images per task) is the same counted skip, with its key,
    as in the training process; the other images of its task are used."""
    from dftrain.shards import ShardWriter
    from dftrain.synthetic import synthetic_train_samples

    folder = tmp_path / "train"
    with ShardWriter(folder, samples_per_shard=8, kind="train") as writer:
        for i, sample in enumerate(synthetic_train_samples(8, RESOLUTION, 0.0, 0)):
            if i == 5:
                sample = {**sample, "jpg": sample["jpg"][: len(sample["jpg"]) // 3]}
                broken = sample["__key__"]
            writer.write(sample)
    inline, with_workers = stream(folder, 0), stream(folder, 1)
    try:
        got = with_workers.next_batch(7)
    finally:
        with_workers.close()
    assert_same_examples(got, inline.next_batch(7))
    assert broken not in [e["key"] for e in got]
    assert with_workers.stats.problems == inline.stats.problems == [(broken, "undecodable image")]
