"""`dftrain generate`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("generate", context_settings=PASSTHROUGH)
def generate(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("generate")
