"""`dftrain env`: versions and capabilities (`--require gpu,sscd` for the first line of a job script)."""

from __future__ import annotations

import json

import typer

app = typer.Typer()


@app.command("env")
def env(
    require: list[str] = typer.Option(
        [], "--require", help="Exit 1 unless these capabilities are ok (comma-separated or repeated), e.g. gpu,sscd,vllm,ray."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per component instead of the table."),
) -> None:
    """Versions and capabilities that decide whether a run works here: torch and CUDA, NCCL, DeepSpeed ops, nvcc, xformers, vLLM, Ray, SSCD, FAISS, WordNet, spaCy."""
    from dftrain.env import collect, format_table, parse_requirements

    required = parse_requirements(require)
    rows = collect()
    if as_json:
        for row in rows:
            typer.echo(json.dumps({"name": row.name, "status": row.status, "detail": row.detail, "hint": row.hint}))
    else:
        typer.echo(format_table(rows))
    missing = [row for row in rows if row.name in required and not row.ok]
    if missing:
        for row in missing:
            typer.secho(f"error: required {row.name} is {row.status}: {row.detail}. {row.hint}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1)
