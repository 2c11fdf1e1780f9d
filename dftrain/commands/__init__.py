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
