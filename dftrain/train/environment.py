"""Process environment for DeepSpeed: one plain process, torchrun, the deepspeed launcher or SLURM."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_launch_env() -> None:
    """Fill what a launcher would have set, so `dftrain train` also runs as one plain process.

    Without RANK/WORLD_SIZE DeepSpeed would look for MPI; srun without torchrun gives SLURM_* only.
    """
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "MASTER_ADDR" in env:
            env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
            env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
        else:
            env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"] = "0", "1", "0"
            env.setdefault("MASTER_ADDR", "127.0.0.1")
            env.setdefault("MASTER_PORT", str(free_port()))
    env.setdefault("LOCAL_RANK", "0")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(free_port()))
    if "DS_ACCELERATOR" not in env:
        import torch

        if not torch.cuda.is_available():
            env["DS_ACCELERATOR"] = "cpu"  # also silences DeepSpeed's fallback warning


SHM_COMM_OP = "deepspeed_shm_comm"


def skip_cpu_shm_comm() -> None:
    """Keep DeepSpeed from JIT-building its shared-memory all-reduce when ranks run on the CPU.

    DeepSpeed's CPU accelerator compiles `deepspeed_shm_comm` with g++ at every process group's
    start (about 35 s on 2 cores the first time, into ~/.cache/torch_extensions); only its
    inference all-reduce uses it, training reduces through gloo. A rank killed while compiling
    leaves the build lock behind, and every later CPU run then waits on that lock forever. The
    op list is computed once per process and DeepSpeed keeps edits to it.
    """
    if os.environ.get("DS_ACCELERATOR") != "cpu":
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False


def default_num_workers(on_cuda: bool) -> int:
    """Decoding processes per rank: on GPUs the cores a rank may use, less one for the step, at most 4;
    on CPU-only hosts 0 (the ranks already use every core, and worker start-up would only cost time)."""
    if not on_cuda:
        return 0
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(0, min(4, (os.cpu_count() or 1) // max(1, local_ranks) - 1))


def device_for_local_rank():
    import torch

    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def peak_memory_bytes(device) -> int:
    """Peak GPU memory allocated on CUDA; resident set size of the process on CPU."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import psutil

    return int(psutil.Process().memory_info().rss)
