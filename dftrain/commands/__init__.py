"""Thin Typer command definitions, one module per stage.

Each module only parses arguments and calls into the stage's library module;
heavy imports (torch, diffusers, deepspeed, spacy, ...) happen inside the command
functions so that `dftrain --help` stays fast.
"""

from typing import Annotated

import typer

# The one --overwrite option of every stage that writes an output folder (see dftrain/outputs.py).
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Write into a folder dftrain did not create (or made by another stage), "
    "replacing dftrain's files there; and redo work that is already done.")]


def not_implemented(stage: str) -> None:
    """Exit with code 2 for a stage that is not built yet."""
    typer.echo(f"dftrain {stage}: not implemented yet", err=True)
    raise typer.Exit(code=2)


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error for an expected problem (bad input, missing file) and exit."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=code)


# Lets a stub command accept any arguments until its stage is implemented.
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
