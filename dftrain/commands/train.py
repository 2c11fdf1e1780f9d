"""`dftrain train`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("train", context_settings=PASSTHROUGH)
def train(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("train")
