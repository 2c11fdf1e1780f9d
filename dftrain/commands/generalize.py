"""`dftrain generalize`: rewrite every caption of a shard folder into a general one with an LLM.

The options are the fields of GeneralizeOptions (dftrain/generalize/options.py), defined there once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from dftrain.generalize.options import GeneralizeOptions
from dftrain.options import options_command

app = typer.Typer()


@app.command("generalize")
@options_command(GeneralizeOptions)
def generalize(given: dict) -> None:
    """Generalize every caption with an LLM (paper: arXiv 2309.07254, section 3.1); resumable, split by rank."""
    import logging

    from dftrain.generalize.options import build_generalize_options, validate
    from dftrain.generalize.passes import table_summary
    from dftrain.generalize.stage import finalize as write_manifest
    from dftrain.generalize.stage import run_from_options
    from dftrain.progress import set_default_interval

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts = build_generalize_options(given)
    validate(opts)
    set_default_interval(opts.log_interval)
    command = " ".join(["dftrain", *sys.argv[1:]])
    out = Path(opts.out)
    if opts.finalize:
        write_manifest(opts.shards, out, command=command, require_all=True,
                       dedup=table_summary(out, opts.dedup_parts) if opts.dedup == "global" else None)
        typer.echo(f"wrote {out / 'manifest.json'}")
        return
    report = run_from_options(opts, command=command)
    typer.echo(json.dumps(report.to_dict()))
    if not report.manifest_written:
        typer.echo(f"rank {report.rank}: shards of other ranks are not finished yet; the last rank to finish "
                   f"writes {out / 'manifest.json'} (or run with --finalize)", err=True)
