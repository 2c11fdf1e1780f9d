"""`dftrain precompute`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("precompute", context_settings=PASSTHROUGH)
def precompute(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("precompute")
