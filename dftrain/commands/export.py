"""`dftrain export`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("export", context_settings=PASSTHROUGH)
def export(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("export")
