"""`dftrain train`: fine-tune the UNet with dual fusion under DeepSpeed.

    dftrain train --model M --shards S --objects O --fusion dual --out RUN [--deepspeed ds_configs/zero2.json]
    torchrun --standalone --nproc_per_node 2 -m dftrain train --config run.yaml --steps 100

Every option can also come from `--config FILE.yaml` (same names); flags override the file. The options
themselves are the fields of TrainConfig (dftrain/train/config.py), defined there once.
"""

from __future__ import annotations

import inspect

import typer

from dftrain.options import options_command
from dftrain.train.config import TrainConfig

app = typer.Typer()

_EXTRA = [
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=typer.Option(
        None, "--config", help="YAML file with any of these options (flags override it).")),
    inspect.Parameter("local_rank", inspect.Parameter.KEYWORD_ONLY, annotation=int | None, default=typer.Option(
        None, "--local_rank", "--local-rank", hidden=True, help="Set by the deepspeed launcher.")),
]


@app.command("train")
@options_command(TrainConfig, extra=_EXTRA)
def train(given: dict, *, config: str | None, local_rank: int | None) -> None:
    """Fine-tune Stable Diffusion with dual fusion (latent + caption) under DeepSpeed ZeRO."""
    import logging
    import os

    from dftrain.train.config import build_config, validate

    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = build_config(config, given)
    facts = validate(cfg)  # ConfigError before anything heavy is imported or computed

    from dftrain.train.trainer import train as run_training

    try:
        summary = run_training(cfg, facts=facts)
    finally:
        _leave_process_group()
    if summary.get("interrupted"):
        raise typer.Exit(code=143)  # stopped by SIGTERM after a checkpoint: not finished
    if summary.get("history") and int(os.environ.get("RANK", "0")) == 0:
        last = summary["history"][-1]
        typer.echo(f"done: step {summary['step']}, loss {last['loss']:.4f}, {last['samples_per_s']:.2f} samples/s, run {summary['run_dir']}")


def _leave_process_group() -> None:
    """Tear the process group down before the interpreter exits: left to exit-time destructors, gloo's
    threads were seen to abort a finished rank ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
