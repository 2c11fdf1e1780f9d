"""The training loop: a DeepSpeed engine around the UNet only.

Single node:   torchrun --standalone --nproc_per_node 8 -m dftrain train --config run.yaml
               deepspeed --num_gpus 8 --module dftrain train --config run.yaml
One process:   dftrain train --model M --shards S --objects O --out RUN
(see launchers/ for multi-node and SLURM)
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dftrain.distributed import all_reduce_numbers
from dftrain.dtypes import lower_precision_dtype
from dftrain.errors import DftrainError
from dftrain.files import atomic_write_text
from dftrain.progress import start_progress
from dftrain.train import checkpoint as ckpt
from dftrain.train.config import TrainConfig, summary_lines, validate
from dftrain.train.environment import (
    default_num_workers,
    device_for_local_rank,
    ensure_launch_env,
    peak_memory_bytes,
    skip_cpu_shm_comm,
)
from dftrain.train.input_pipeline import to_device
from dftrain.train.run_folder import check_run_folder, clear_run_outputs
from dftrain.train.safe_load import weights_only_loading
from dftrain.train.schedule import lr_factor

log = logging.getLogger("dftrain.train")


def fill_ds_config(ds: dict[str, Any], cfg: TrainConfig, world_size: int, on_cuda: bool) -> dict[str, Any]:
    """The DeepSpeed config with batch size, accumulation, clipping, precision and optimizer from flags."""
    ds = {k: v for k, v in json.loads(json.dumps(ds)).items() if not k.startswith("_")}  # deep copy, no comments
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        ds.pop(key, None)
    ds["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds["train_batch_size"] = cfg.micro_batch_size * cfg.grad_accum * world_size
    ds["gradient_clipping"] = cfg.grad_clip
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": cfg.precision == "bf16"}
    ds["fp16"] = {**ds.get("fp16", {}), "enabled": cfg.precision == "fp16"}
    optimizer = ds.setdefault("optimizer", {"type": "AdamW", "params": {}})
    optimizer.setdefault("type", "AdamW")
    params = optimizer.setdefault("params", {})
    params.update(
        lr=cfg.lr, betas=[cfg.adam_beta1, cfg.adam_beta2], eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    if not on_cuda:
        params.setdefault("torch_adam", True)  # FusedAdam would be compiled with g++ for nothing
    if "scheduler" in ds:
        log.warning("ignoring the DeepSpeed config's scheduler: --lr-schedule decides")
        ds.pop("scheduler")
    ds.setdefault("steps_per_print", 10**9)
    ds.setdefault("wall_clock_breakdown", False)
    return ds


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    samples: int = 0  # examples seen by all ranks
    history: list[dict] = field(default_factory=list)


class MetricsLog:
    """JSON lines in RUN/metrics.jsonl (+ TensorBoard when asked), rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                from dftrain.errors import MissingDependencyError

                raise MissingDependencyError("--tensorboard needs the tensorboard package: pip install tensorboard") from exc
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class GracefulStop:
    """SIGTERM (SLURM preemption, torchrun shutting down) -> save a checkpoint at the next step, then stop.

    Ranks agree through an all-reduce each step, so they all stop after the same step.
    """

    def __init__(self):
        import signal
        import threading

        self.requested = False
        self.requested_by_any = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def agreed(self, dist, device) -> bool:
        (flag,) = all_reduce_numbers(dist, [1 if self.requested else 0], op=dist.ReduceOp.MAX, device=device)
        self.requested_by_any = flag > 0
        return self.requested_by_any

    def restore(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def rng_state(generator: torch.Generator, rng: random.Random, position) -> dict:
    return {"torch": generator.get_state(), "python": rng.getstate(), "position": position.as_dict()}


def quiet_libraries() -> None:
    """Silence known harmless noise: torch's collective renames used inside DeepSpeed, the
    `accelerate` hint and weight-loading bars of diffusers / transformers."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def train(cfg: TrainConfig, *, facts: dict | None = None) -> dict:
    """Run (or resume) training; returns a summary. Validation happens before any compute."""
    facts = facts if facts is not None else validate(cfg)
    check_run_folder(cfg.to_dict())
    ensure_launch_env()
    quiet_libraries()
    import deepspeed
    import torch.distributed as dist

    from dftrain.train.batch import BatchBuilder
    from dftrain.train.data import ObjectBank, StreamPosition, TrainStream
    from dftrain.train.ema import LocalEMA
    from dftrain.train.models import default_resolution, load_components

    skip_cpu_shm_comm()
    deepspeed.init_distributed(verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    is_main = rank == 0
    device = device_for_local_rank()
    on_cuda = device.type == "cuda"
    run_dir = Path(cfg.out)
    ckpt_dir = ckpt.checkpoints_dir(run_dir)
    if is_main:
        if cfg.overwrite and cfg.resume is None:
            clear_run_outputs(run_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()  # no rank looks into the run folder while rank 0 clears it
    precomputed = bool(facts.get("precomputed"))
    ds_config = fill_ds_config(facts["ds_config"], cfg, world, on_cuda)
    stage = facts["zero_stage"]

    if is_main:
        print("dftrain train: resolved configuration")
        for line in summary_lines(cfg, facts, world):
            print("  " + line)
        import yaml

        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")

    torch.manual_seed(cfg.seed)
    # Frozen encoders run in the training precision on GPUs; in fp32 on CPUs (bf16 convolutions are slow there).
    frozen_dtype = lower_precision_dtype(cfg.precision) if on_cuda else torch.float32
    stored_text = bool(facts.get("stored_text", precomputed))
    components = load_components(cfg, precomputed=precomputed, device=device, frozen_dtype=frozen_dtype,
                                 stored_text=stored_text)
    resolution = cfg.resolution or default_resolution(components.unet, components.vae_scale_factor)

    def make_scheduler(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.lr_schedule, cfg.warmup_steps, cfg.steps)
        )

    trainable = [p for p in components.unet.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=components.unet, model_parameters=trainable, config=ds_config, lr_scheduler=make_scheduler
    )
    model_dtype = lower_precision_dtype(cfg.precision)
    ema = LocalEMA(engine.module, cfg.ema_decay) if cfg.ema else None

    # Per-rank seeds: every rank draws different noise, timesteps, flips and objects.
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    rng = random.Random(cfg.seed * 1000 + rank)
    state = RunState()
    position = StreamPosition()

    resume_point = None
    if cfg.resume == "auto":
        resume_point = ckpt.find_resume_point(run_dir)
    elif cfg.resume:
        resume_point = ckpt.resolve_checkpoint(cfg.resume)
    if resume_point is not None:
        load_dir, tag = resume_point
        with weights_only_loading():  # a --resume PATH from elsewhere must not run code
            _, client = engine.load_checkpoint(str(load_dir), tag)
        if client is None:
            raise DftrainError(f"could not load checkpoint {load_dir / tag}")
        saved_world = client["world_size"]
        if saved_world != world:
            raise DftrainError(f"checkpoint {tag} was written by {saved_world} ranks; resume with the same number (now {world})")
        mine = client["ranks"][rank]
        generator.set_state(mine["torch"])
        rng.setstate(mine["python"])
        position = StreamPosition(**mine["position"])
        state.step, state.samples = client["step"], client["samples"]
        if ema is not None:
            ema_path = ckpt.ema_file(load_dir, tag, rank)
            if ema_path.is_file():
                ema.load(ema_path)
            else:
                log.warning("checkpoint %s has no EMA for rank %d: EMA restarts from the current weights", tag, rank)
        if is_main:
            print(f"resumed from {load_dir / tag} at step {state.step}")
            truncate_metrics(run_dir / "metrics.jsonl", state.step)

    stream = TrainStream(
        cfg.shards, rank=rank, world_size=world, resolution=resolution, precomputed=precomputed,
        caption_field=cfg.caption_field, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, position=position,
        num_workers=cfg.num_workers if cfg.num_workers is not None else default_num_workers(on_cuda),
        dup_sampling=cfg.dup_sampling, dup_fraction=cfg.dup_fraction, dup_weight=cfg.dup_weight,
    )
    bank = ObjectBank(cfg.objects, precomputed=precomputed, resolution=resolution) if cfg.fusion != "none" else None
    builder = BatchBuilder(cfg, components, bank, device=device, generator=generator, rng=rng, precomputed=precomputed,
                           stored_text=stored_text)

    metrics = MetricsLog(run_dir, is_main, cfg.tensorboard)
    progress = start_progress("train", cfg.steps, unit="steps", enabled=is_main and cfg.progress, done=state.step,
                              interval=cfg.log_interval)

    def save(step: int) -> None:
        tag = ckpt.tag_for_step(step)
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, rng_state(generator, rng, stream.position))
        client = {"step": step, "samples": state.samples, "world_size": world, "ranks": gathered}
        engine.save_checkpoint(str(ckpt_dir), tag, client_state=client, save_latest=False)
        if ema is not None:
            ema.save(ckpt.ema_file(ckpt_dir, tag, rank))
        if is_main:
            ckpt.write_meta(ckpt_dir, tag, {
                "step": step, "world_size": world, "zero_stage": stage, "ema": ema is not None,
                "model": str(Path(cfg.model).resolve()), "precision": cfg.precision, "config": cfg.to_dict(),
            })
        dist.barrier()  # every rank has finished writing before the checkpoint counts as complete
        if is_main:
            ckpt.mark_complete(ckpt_dir, tag)
            ckpt.prune(ckpt_dir, cfg.keep_checkpoints)

    window_loss, window_samples, window_start, window_cpu = 0.0, 0, time.perf_counter(), time.process_time()
    last_saved = state.step if resume_point else None
    stop = GracefulStop()
    try:
        while state.step < cfg.steps:
            step_loss = 0.0
            for _ in range(cfg.grad_accum):
                examples = stream.next_batch(cfg.micro_batch_size)
                noisy, t, states, target = builder.build(examples)
                pred = engine(
                    to_device(noisy, device, model_dtype), to_device(t, device),
                    encoder_hidden_states=to_device(states, device, model_dtype),
                ).sample
                loss = torch.nn.functional.mse_loss(pred.float(), to_device(target, device).float())
                engine.backward(loss)
                engine.step()
                step_loss += loss.item() / cfg.grad_accum
            if ema is not None:
                ema.update()
            state.step += 1
            step_samples = cfg.micro_batch_size * cfg.grad_accum * world
            state.samples += step_samples
            window_loss += step_loss
            window_samples += step_samples
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                steps_in_window = window_samples // step_samples
                (loss_sum,) = all_reduce_numbers(dist, [window_loss / steps_in_window], op=dist.ReduceOp.SUM,
                                                 device=device)
                elapsed = time.perf_counter() - window_start
                (memory_max,) = all_reduce_numbers(dist, [peak_memory_bytes(device)], op=dist.ReduceOp.MAX,
                                                   device=device)
                record = {
                    "step": state.step,
                    "loss": loss_sum / world,
                    "lr": engine.get_lr()[0],
                    "samples_per_s": window_samples / elapsed if elapsed > 0 else 0.0,
                    "step_time_s": elapsed / steps_in_window,
                    # CPU seconds of this process per step: robust to other jobs sharing the machine
                    "step_cpu_s": (time.process_time() - window_cpu) / steps_in_window,
                    "memory_bytes": peak_memory_bytes(device),  # rank 0
                    "memory_bytes_max_rank": int(memory_max),
                    "samples": state.samples,
                    "epoch": stream.position.epoch,
                }
                metrics.write(record)
                state.history.append(record)
                progress.update(state.step, loss=record["loss"])
                window_loss, window_samples, window_start, window_cpu = 0.0, 0, time.perf_counter(), time.process_time()
            else:
                progress.update(state.step)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                save_start, save_cpu = time.perf_counter(), time.process_time()
                save(state.step)
                last_saved = state.step
                # checkpoint time is not training time: keep it out of samples/s
                window_start += time.perf_counter() - save_start
                window_cpu += time.process_time() - save_cpu
            if stop.agreed(dist, device):
                break
        if last_saved != state.step:
            save(state.step)
    finally:
        stream.close()
        stop.restore()
        progress.close()
        metrics.close()

    skipped = stream.stats.total_skipped
    if skipped:
        log.warning("rank %d skipped %d training samples: %s", rank, skipped, stream.stats.summary())
    if stop.requested_by_any:
        if is_main:
            print(f"stopped by SIGTERM at step {state.step}: checkpoint saved; continue with --resume auto")
        return {"step": state.step, "samples": state.samples, "run_dir": str(run_dir), "world_size": world,
                "zero_stage": stage, "interrupted": True, "history": state.history}
    summary = {"step": state.step, "samples": state.samples, "run_dir": str(run_dir), "world_size": world,
               "zero_stage": stage, "checkpoint": str(ckpt_dir / ckpt.tag_for_step(state.step)), "history": state.history}
    if cfg.export:
        dist.barrier()
        if is_main:
            from dftrain.train.export import export_pipeline

            summary["pipeline"] = str(export_pipeline(ckpt_dir, run_dir / "pipeline", overwrite=True))
            print(f"exported pipeline to {summary['pipeline']}")
    return summary
