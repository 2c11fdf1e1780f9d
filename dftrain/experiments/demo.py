"""`dftrain demo`: the packaged demo experiment (demo.yaml), a smaller memorization regime run by
the same runner as `dftrain reproduce` (plan -> run -> report). Profiles: default (<= 10 minutes on
2 cores once set up) and ci (the smoke run of every stage)."""

from __future__ import annotations

from pathlib import Path

from dftrain.errors import ConfigError
from dftrain.experiments.config import Experiment, load_experiment
from dftrain.paths import packaged_ds_config

DEMO_FILE = Path(__file__).with_name("demo.yaml")


def load_demo(profile: str = "default", ranks: int | None = None, deepspeed: str | None = None) -> Experiment:
    """The demo experiment of `profile`; `ranks` (DeepSpeed ranks per training) and `deepspeed` (its config,
    default the packaged ZeRO-2 one) override the file."""
    if ranks is not None and ranks < 1:
        raise ConfigError(f"--ranks must be >= 1, got {ranks}")
    train: dict = {"deepspeed": deepspeed or str(packaged_ds_config("zero2"))}
    if ranks is not None:
        train["ranks"] = ranks
    try:
        return load_experiment(DEMO_FILE, profile, overrides={"train": train})
    except ConfigError as exc:
        raise ConfigError(f"demo: {str(exc).splitlines()[0]}") from None
