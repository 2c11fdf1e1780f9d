"""`dftrain compare`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("compare", context_settings=PASSTHROUGH)
def compare(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("compare")
