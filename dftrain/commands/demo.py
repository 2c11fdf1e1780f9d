"""`dftrain demo`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer()


@app.command("demo", context_settings=PASSTHROUGH)
def demo(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("demo")
