"""`dftrain reproduce`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("reproduce", context_settings=PASSTHROUGH)
def reproduce(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("reproduce")
