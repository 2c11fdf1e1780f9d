"""Thin Typer command definitions, one module per stage.

Each module only parses arguments and calls into the stage's library module;
heavy imports (torch, diffusers, deepspeed, spacy, ...) happen inside the command
functions so that `dftrain --help` stays fast.
"""

from typing import Annotated

import typer

from dftrain.outputs import OVERWRITE_HELP
from dftrain.progress import DEFAULT_LOG_INTERVAL, LOG_INTERVAL_HELP, interval_problem, set_default_interval
from dftrain.shards.inputs import SHARDS_HELP

# The one --overwrite option of every stage that writes an output folder (see dftrain/outputs.py).
Overwrite = Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)]


def shards_option(what: str, flag: str = "--shards", *, required: bool = True):
    """The one shard-input option of every stage (repeatable; resolved by dftrain.shards.inputs.shard_set):
    `what` says which data the stage reads, the rest of the help is shared."""
    return typer.Option(... if required else None, flag, metavar="DIR|TAR|LIST", help=f"{what} {SHARDS_HELP}")


def _set_log_interval(seconds: float | None) -> float | None:
    if seconds is not None:
        if interval_problem(seconds):
            raise typer.BadParameter(f"must be a number of seconds > 0, got {seconds}")
        set_default_interval(seconds)
    return seconds


# The one --log-interval option of every long stage (the policy is dftrain/progress.py). Parsing it
# sets this process's interval, so a stage's library code needs no extra argument. Train's is the
# `log_interval` field of TrainConfig (same help), which the trainer passes on.
LogInterval = Annotated[float, typer.Option(
    "--log-interval", metavar="SECONDS", callback=_set_log_interval, show_default=False,
    help=f"{LOG_INTERVAL_HELP} (default: {DEFAULT_LOG_INTERVAL})")]


def _hide_flag_types() -> None:
    """Typer's rich help shows `<bool>` as the "type" of an on/off flag, which takes no value: show none."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "hides_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.hides_flags = True
    TyperOption.display_type_rich = display_type_rich


_hide_flag_types()
