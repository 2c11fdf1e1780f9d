"""`dftrain compare`: evaluation runs side by side, with replication reduction against a baseline."""

from __future__ import annotations

from pathlib import Path

import typer

from dftrain.commands import Overwrite

app = typer.Typer()


@app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="Evaluation output folders (each with report.json)."),
    baseline: Path = typer.Option(..., "--baseline", help="The run the others are compared with."),
    out: Path | None = typer.Option(None, "--out", help="Write compare.md and compare.csv here."),
    overwrite: Overwrite = False,
) -> None:
    """Markdown/CSV table: sim_p95 and frac_above_0_5 reduction in %, FID, fd_embedded and diversity deltas."""
    from dftrain.evaluate.compare import compare as run_compare

    md, _ = run_compare(runs, baseline, out, overwrite=overwrite)
    typer.echo(md)
    if out is not None:
        typer.echo(f"wrote {out / 'compare.md'} and {out / 'compare.csv'}")
