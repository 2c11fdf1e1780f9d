"""`dftrain evaluate`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("evaluate", context_settings=PASSTHROUGH)
def evaluate(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("evaluate")
