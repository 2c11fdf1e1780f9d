"""`dftrain score`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("score", context_settings=PASSTHROUGH)
def score(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("score")
