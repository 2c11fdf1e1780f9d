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


@dataclass
class Session:
    """What every step of a run shares: the configuration, this rank's place, the run folder."""

    cfg: TrainConfig
    facts: dict
    dist: Any  # torch.distributed, initialized by DeepSpeed
    rank: int
    world: int
    device: torch.device
    run_dir: Path

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def ckpt_dir(self) -> Path:
        return ckpt.checkpoints_dir(self.run_dir)

    @property
    def zero_stage(self) -> int:
        return self.facts["zero_stage"]

    @property
    def precomputed(self) -> bool:
        return bool(self.facts.get("precomputed"))

    @property
    def stored_text(self) -> bool:
        return bool(self.facts.get("stored_text", self.precomputed))


@dataclass
class Model:
    """The frozen encoders, the DeepSpeed engine around the UNet, its EMA, and the sizes it trains at."""

    components: Any
    engine: Any
    ema: Any
    resolution: int
    dtype: torch.dtype  # what the UNet computes in


@dataclass
class Draws:
    """This rank's random streams: every rank draws different noise, timesteps, flips and objects."""

    generator: torch.Generator
    rng: random.Random

    @classmethod
    def for_rank(cls, seed: int, rank: int) -> Draws:
        return cls(torch.Generator().manual_seed(seed * 1000 + rank), random.Random(seed * 1000 + rank))

    def saved(self, position) -> dict:
        return {"torch": self.generator.get_state(), "python": self.rng.getstate(), "position": position.as_dict()}

    def restore(self, saved: dict):
        """Back to a checkpoint's draws; returns its StreamPosition."""
        from dftrain.train.data import StreamPosition

        self.generator.set_state(saved["torch"])
        self.rng.setstate(saved["python"])
        return StreamPosition(**saved["position"])


def start_session(cfg: TrainConfig, facts: dict) -> Session:
    """Join the process group, prepare the run folder (cleared first with --overwrite), record the config."""
    import deepspeed
    import torch.distributed as dist

    skip_cpu_shm_comm()
    deepspeed.init_distributed(verbose=False)
    session = Session(cfg, facts, dist, dist.get_rank(), dist.get_world_size(), device_for_local_rank(), Path(cfg.out))
    if session.is_main:
        if cfg.overwrite and cfg.resume is None:
            clear_run_outputs(session.run_dir)
        session.ckpt_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()  # no rank looks into the run folder while rank 0 clears it
    if session.is_main:
        import yaml

        print("dftrain train: resolved configuration")
        for line in summary_lines(cfg, facts, session.world):
            print("  " + line)
        (session.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    return session


def build_model(session: Session) -> Model:
    """Load the model folder, wrap the UNet in the DeepSpeed engine (optimizer, schedule), add the EMA."""
    import deepspeed

    from dftrain.train.ema import LocalEMA
    from dftrain.train.models import default_resolution, load_components

    cfg = session.cfg
    torch.manual_seed(cfg.seed)
    # Frozen encoders run in the training precision on GPUs; in fp32 on CPUs (bf16 convolutions are slow there).
    frozen_dtype = lower_precision_dtype(cfg.precision) if session.on_cuda else torch.float32
    components = load_components(cfg, precomputed=session.precomputed, device=session.device,
                                 frozen_dtype=frozen_dtype, stored_text=session.stored_text)

    def make_scheduler(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.lr_schedule, cfg.warmup_steps, cfg.steps)
        )

    trainable = [p for p in components.unet.parameters() if p.requires_grad]
    ds_config = fill_ds_config(session.facts["ds_config"], cfg, session.world, session.on_cuda)
    engine, _, _, _ = deepspeed.initialize(
        model=components.unet, model_parameters=trainable, config=ds_config, lr_scheduler=make_scheduler
    )
    return Model(components, engine, LocalEMA(engine.module, cfg.ema_decay) if cfg.ema else None,
                 cfg.resolution or default_resolution(components.unet, components.vae_scale_factor),
                 lower_precision_dtype(cfg.precision))


def resume(session: Session, model: Model, draws: Draws) -> tuple[RunState, Any, bool]:
    """(state, stream position, resumed): from --resume's checkpoint when there is one, else from the start."""
    from dftrain.train.data import StreamPosition

    cfg, state = session.cfg, RunState()
    if cfg.resume == "auto":
        point = ckpt.find_resume_point(session.run_dir)
    else:
        point = ckpt.resolve_checkpoint(cfg.resume) if cfg.resume else None
    if point is None:
        return state, StreamPosition(), False
    load_dir, tag = point
    with weights_only_loading():  # a --resume PATH from elsewhere must not run code
        _, client = model.engine.load_checkpoint(str(load_dir), tag)
    if client is None:
        raise DftrainError(f"could not load checkpoint {load_dir / tag}")
    saved_world = client["world_size"]
    if saved_world != session.world:
        raise DftrainError(f"checkpoint {tag} was written by {saved_world} ranks; resume with the same number "
                           f"(now {session.world})")
    position = draws.restore(client["ranks"][session.rank])
    state.step, state.samples = client["step"], client["samples"]
    if model.ema is not None:
        ema_path = ckpt.ema_file(load_dir, tag, session.rank)
        if ema_path.is_file():
            model.ema.load(ema_path)
        else:
            log.warning("checkpoint %s has no EMA for rank %d: EMA restarts from the current weights", tag,
                        session.rank)
    if session.is_main:
        print(f"resumed from {load_dir / tag} at step {state.step}")
        truncate_metrics(session.run_dir / "metrics.jsonl", state.step)
    return state, position, True


def open_inputs(session: Session, model: Model, draws: Draws, position):
    """(stream of this rank's examples, batch builder with its object bank) from where the run stands."""
    from dftrain.train.batch import BatchBuilder
    from dftrain.train.data import ObjectBank, TrainStream

    cfg = session.cfg
    stream = TrainStream(
        cfg.shards, rank=session.rank, world_size=session.world, resolution=model.resolution,
        precomputed=session.precomputed, caption_field=cfg.caption_field, shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed, position=position,
        num_workers=cfg.num_workers if cfg.num_workers is not None else default_num_workers(session.on_cuda),
        dup_sampling=cfg.dup_sampling, dup_fraction=cfg.dup_fraction, dup_weight=cfg.dup_weight,
    )
    bank = (ObjectBank(cfg.objects, precomputed=session.precomputed, resolution=model.resolution)
            if cfg.fusion != "none" else None)
    builder = BatchBuilder(cfg, model.components, bank, device=session.device, generator=draws.generator,
                           rng=draws.rng, precomputed=session.precomputed, stored_text=session.stored_text)
    return stream, builder


def forward_backward(engine, builder, examples: list[dict], device: torch.device, dtype: torch.dtype) -> float:
    """One micro-batch: fused, noised latents and caption states (the builder) through the UNet, MSE to the
    target, backward and the engine's step (which applies the optimizer at accumulation boundaries)."""
    noisy, t, states, target = builder.build(examples)
    pred = engine(to_device(noisy, device, dtype), to_device(t, device),
                  encoder_hidden_states=to_device(states, device, dtype)).sample
    loss = torch.nn.functional.mse_loss(pred.float(), to_device(target, device).float())
    engine.backward(loss)
    engine.step()
    return loss.item()


def train_step(session: Session, model: Model, stream, builder) -> float:
    """One optimizer step (grad_accum micro-batches) and the EMA update; the mean micro-batch loss."""
    cfg = session.cfg
    loss = 0.0
    for _ in range(cfg.grad_accum):
        examples = stream.next_batch(cfg.micro_batch_size)
        loss += forward_backward(model.engine, builder, examples, session.device, model.dtype) / cfg.grad_accum
    if model.ema is not None:
        model.ema.update()
    return loss


def save_checkpoint(session: Session, model: Model, draws: Draws, stream, state: RunState) -> None:
    """Every rank writes its part (and its draws); the checkpoint counts once all ranks finished."""
    cfg, dist, step = session.cfg, session.dist, state.step
    tag = ckpt.tag_for_step(step)
    gathered: list[Any] = [None] * session.world
    dist.all_gather_object(gathered, draws.saved(stream.position))
    client = {"step": step, "samples": state.samples, "world_size": session.world, "ranks": gathered}
    model.engine.save_checkpoint(str(session.ckpt_dir), tag, client_state=client, save_latest=False)
    if model.ema is not None:
        model.ema.save(ckpt.ema_file(session.ckpt_dir, tag, session.rank))
    if session.is_main:
        ckpt.write_meta(session.ckpt_dir, tag, {
            "step": step, "world_size": session.world, "zero_stage": session.zero_stage, "ema": model.ema is not None,
            "model": str(Path(cfg.model).resolve()), "precision": cfg.precision, "config": cfg.to_dict(),
        })
    dist.barrier()  # every rank has finished writing before the checkpoint counts as complete
    if session.is_main:
        ckpt.mark_complete(session.ckpt_dir, tag)
        ckpt.prune(session.ckpt_dir, cfg.keep_checkpoints)


class MetricWindow:
    """Loss and throughput since the last logged step; checkpoint time is left out of it."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss, self.samples, self.start, self.cpu = 0.0, 0, time.perf_counter(), time.process_time()

    def add(self, loss: float, samples: int) -> None:
        self.loss += loss
        self.samples += samples

    def leave_out(self, wall_s: float, cpu_s: float) -> None:
        self.start += wall_s
        self.cpu += cpu_s

    def record(self, session: Session, state: RunState, step_samples: int, lr: float, epoch: int) -> dict:
        """The metrics line: mean loss over ranks, rates, peak memory (rank 0 and the largest); a collective."""
        dist, device = session.dist, session.device
        steps = self.samples // step_samples
        (loss_sum,) = all_reduce_numbers(dist, [self.loss / steps], op=dist.ReduceOp.SUM, device=device)
        elapsed = time.perf_counter() - self.start
        (memory_max,) = all_reduce_numbers(dist, [peak_memory_bytes(device)], op=dist.ReduceOp.MAX, device=device)
        return {
            "step": state.step,
            "loss": loss_sum / session.world,
            "lr": lr,
            "samples_per_s": self.samples / elapsed if elapsed > 0 else 0.0,
            "step_time_s": elapsed / steps,
            # CPU seconds of this process per step: robust to other jobs sharing the machine
            "step_cpu_s": (time.process_time() - self.cpu) / steps,
            "memory_bytes": peak_memory_bytes(device),  # rank 0
            "memory_bytes_max_rank": int(memory_max),
            "samples": state.samples,
            "epoch": epoch,
        }


def run_steps(session: Session, model: Model, draws: Draws, stream, builder, state: RunState, *,
              resumed: bool) -> GracefulStop:
    """Steps until --steps or an agreed SIGTERM: metrics every --log-every, checkpoints every
    --checkpoint-every and at the end. Returns the stop signal's state."""
    cfg = session.cfg
    metrics = MetricsLog(session.run_dir, session.is_main, cfg.tensorboard)
    progress = start_progress("train", cfg.steps, unit="steps", enabled=session.is_main and cfg.progress,
                              done=state.step, interval=cfg.log_interval)
    step_samples = cfg.micro_batch_size * cfg.grad_accum * session.world
    window = MetricWindow()
    last_saved = state.step if resumed else None
    stop = GracefulStop()
    try:
        while state.step < cfg.steps:
            loss = train_step(session, model, stream, builder)
            state.step += 1
            state.samples += step_samples
            window.add(loss, step_samples)
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                record = window.record(session, state, step_samples, model.engine.get_lr()[0], stream.position.epoch)
                metrics.write(record)
                state.history.append(record)
                progress.update(state.step, loss=record["loss"])
                window.reset()
            else:
                progress.update(state.step)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                save_start, save_cpu = time.perf_counter(), time.process_time()
                save_checkpoint(session, model, draws, stream, state)
                last_saved = state.step
                window.leave_out(time.perf_counter() - save_start, time.process_time() - save_cpu)
            if stop.agreed(session.dist, session.device):
                break
        if last_saved != state.step:
            save_checkpoint(session, model, draws, stream, state)
    finally:
        stream.close()
        stop.restore()
        progress.close()
        metrics.close()
    return stop


def finish(session: Session, state: RunState, stream, stop: GracefulStop) -> dict:
    """The run's summary; the exported pipeline unless stopped early or --no-export."""
    skipped = stream.stats.total_skipped
    if skipped:
        log.warning("rank %d skipped %d training samples: %s", session.rank, skipped, stream.stats.summary())
    summary = {"step": state.step, "samples": state.samples, "run_dir": str(session.run_dir),
               "world_size": session.world, "zero_stage": session.zero_stage, "history": state.history}
    if stop.requested_by_any:
        if session.is_main:
            print(f"stopped by SIGTERM at step {state.step}: checkpoint saved; continue with --resume auto")
        return {**summary, "interrupted": True}
    summary["checkpoint"] = str(session.ckpt_dir / ckpt.tag_for_step(state.step))
    if session.cfg.export:
        session.dist.barrier()
        if session.is_main:
            from dftrain.train.export import export_pipeline

            summary["pipeline"] = str(export_pipeline(session.ckpt_dir, session.run_dir / "pipeline", overwrite=True))
            print(f"exported pipeline to {summary['pipeline']}")
    return summary


def train(cfg: TrainConfig, *, facts: dict | None = None) -> dict:
    """Run (or resume) training; returns a summary. Validation happens before any compute."""
    facts = facts if facts is not None else validate(cfg)
    check_run_folder(cfg.to_dict())
    ensure_launch_env()
    quiet_libraries()
    session = start_session(cfg, facts)
    model = build_model(session)
    draws = Draws.for_rank(cfg.seed, session.rank)
    state, position, resumed = resume(session, model, draws)
    stream, builder = open_inputs(session, model, draws, position)
    stop = run_steps(session, model, draws, stream, builder, state, resumed=resumed)
    return finish(session, state, stream, stop)
