"""The `dftrain` command line: wiring only.

Each stage's arguments are parsed in dftrain/commands/<stage>.py, which calls the
stage's library module. Group commands (shard, model) are Typer sub-apps; the
others are single commands registered from their module's Typer app.
"""

import typer

from dftrain.commands import (
    compare,
    demo,
    detect,
    env,
    evaluate,
    export,
    generalize,
    generate,
    model,
    precompute,
    reproduce,
    score,
    shard,
    train,
)

app = typer.Typer(
    name="dftrain",
    help="Train text-to-image diffusion models that copy less (generalized captions + dual fusion).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _print_version(value: bool) -> None:
    if value:
        from dftrain import __version__

        typer.echo(f"dftrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the dftrain version and exit."
    ),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", min=1, help="Largest image (width x height, read from its header) any stage "
        "accepts; default 33554432. Applies to every stage and to the processes it starts."),
    max_member_bytes: int | None = typer.Option(
        None, "--max-member-bytes", min=1, help="Largest tar member / image file, checked before reading; "
        "default 67108864 (64 MiB)."),
    max_caption_bytes: int | None = typer.Option(
        None, "--max-caption-bytes", min=1, help="Largest caption in UTF-8 bytes; default 10000."),
) -> None:
    """Train text-to-image diffusion models that copy less (generalized captions + dual fusion).

    The --max-* limits for bad input are shared by every stage (dftrain/shards/limits.py) and go
    before the command name.
    """
    import dataclasses
    import os

    from dftrain.shards.limits import Limits

    given = {"max_pixels": max_pixels, "max_member_bytes": max_member_bytes, "max_caption_bytes": max_caption_bytes}
    chosen = dataclasses.replace(Limits.from_env(), **{k: v for k, v in given.items() if v is not None})
    os.environ.update(chosen.env())  # child processes (ranks, DataLoader and build workers) inherit them


app.add_typer(shard.app, name="shard", help="Build, validate and inspect webdataset shards.")
app.add_typer(model.app, name="model", help="Build the embedded tiny Stable-Diffusion-shaped model.")

# Single-command stages, in pipeline order.
for module in (score, generalize, precompute, train, export, generate, evaluate, detect, compare, demo, reproduce, env):
    app.registered_commands.extend(module.app.registered_commands)


def main() -> None:
    import os
    import sys

    from dftrain.distributed import split_local_rank
    from dftrain.errors import DftrainError
    from dftrain.outputs import disk_error_message

    # Busy-waiting OpenMP threads made a 2-thread generation 14x slower while one other process ran
    # on the 2 cores (18.7 s vs 1.3 s, measured); passive waiting lost nothing there. Must be set
    # before torch loads (commands import it lazily). OMP_WAIT_POLICY=ACTIVE overrides.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # transformers warns on every pipeline import that torchvision is absent (dftrain does not need
    # it); keep the output readable. TRANSFORMERS_VERBOSITY=warning brings its warnings back.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # The deepspeed launcher inserts --local_rank=N anywhere (even before the subcommand).
    argv, local_rank = split_local_rank(sys.argv[1:])
    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", local_rank)
    try:
        app(argv, prog_name="dftrain")
    except DftrainError as exc:
        # Expected problems (bad input, missing files, bad config): one line, no stack trace.
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except OSError as exc:
        # A full, read-only or forbidden disk outside any claimed output folder; other OSErrors are bugs.
        message = disk_error_message(exc)
        if message is None:
            raise
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
