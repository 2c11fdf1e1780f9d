"""The trainer's own collectives put their tensors on the training device (NCCL refuses CPU tensors)."""

from __future__ import annotations

import torch
import torch.distributed as real_dist

from dftrain.distributed import all_reduce_numbers
from dftrain.train.trainer import GracefulStop


class NcclLikeGroup:
    """Two ranks that hold the same numbers, and NCCL's rule: tensors must be on the group's device."""

    ReduceOp = real_dist.ReduceOp

    def __init__(self, device: torch.device, world: int = 2):
        self.device, self.world, self.seen = device, world, []

    def all_reduce(self, tensor, op=real_dist.ReduceOp.SUM):
        self.seen.append((tensor.device, tensor.dtype))
        if tensor.device != self.device:
            raise RuntimeError(f"No backend type associated with device type {tensor.device.type}")
        if op == real_dist.ReduceOp.SUM:
            tensor.mul_(self.world)


def test_numbers_are_reduced_on_the_given_device_in_float64():
    group = NcclLikeGroup(torch.device("cpu"))
    big = 2.0**40 + 0.5  # survives float64, not float32
    assert all_reduce_numbers(group, [big, 1.5], op=group.ReduceOp.SUM, device=torch.device("cpu")) == [2 * big, 3.0]
    assert all_reduce_numbers(group, [7], op=group.ReduceOp.MAX, device=torch.device("cpu")) == [7.0]
    assert group.seen == [(torch.device("cpu"), torch.float64)] * 2


def test_graceful_stop_agrees_through_the_training_device():
    group = NcclLikeGroup(torch.device("cpu"))
    stop = GracefulStop()
    try:
        assert stop.agreed(group, torch.device("cpu")) is False
        stop.requested = True
        assert stop.agreed(group, torch.device("cpu")) is True and stop.requested_by_any
    finally:
        stop.restore()
    assert all(device == torch.device("cpu") for device, _ in group.seen)


GROUP_WITHOUT_CPU = """
import os, sys
import torch
import torch.distributed as dist

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
dist.init_process_group("meta:gloo", rank=0, world_size=1)  # like NCCL: no backend for CPU tensors
import dftrain.distributed as distributed

devices = []
distributed._read_back = lambda t: (devices.append(t.device.type), [0.0] * t.numel())[1]  # meta holds no values
from dftrain.train.trainer import GracefulStop

stop = GracefulStop()
stop.agreed(dist, torch.device("meta"))
distributed.all_reduce_numbers(dist, [1.0, 2.0], op=dist.ReduceOp.MAX, device=torch.device("meta"))
try:
    dist.all_reduce(torch.zeros(1))
    print("cpu tensor accepted")
except RuntimeError as exc:
    print("cpu tensor refused:", exc)
print("devices", devices)
"""


def test_the_trainers_collectives_run_on_a_group_that_refuses_cpu_tensors():
    """A real process group with no CPU backend (as DeepSpeed's NCCL group on CUDA): the stop agreement
    and the metric reductions go through it; a CPU tensor is refused there (what every GPU run hit)."""
    import subprocess
    import sys

    from dftrain.train.environment import free_port

    result = subprocess.run([sys.executable, "-c", GROUP_WITHOUT_CPU, str(free_port())], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu tensor refused: No backend type associated with device type cpu" in result.stdout
    assert "devices ['meta', 'meta']" in result.stdout
