"""`dftrain generalize`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("generalize", context_settings=PASSTHROUGH)
def generalize(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("generalize")
