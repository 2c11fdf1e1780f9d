"""`dftrain shard ...`."""

import typer

from dftrain.commands import PASSTHROUGH, not_implemented

app = typer.Typer(help="shard commands", no_args_is_help=True)


@app.command("todo", context_settings=PASSTHROUGH)
def todo(ctx: typer.Context) -> None:
    """Not implemented yet."""
    not_implemented("shard")
