"""`dftrain demo`: the whole method on the embedded default."""

from pathlib import Path

import typer

from dftrain.commands import Overwrite

app = typer.Typer()


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run folder; a re-run reuses the finished stages."),
    profile: str = typer.Option("default", help="Size: 'default' (~15 min on 2 cores) or 'ci' (minimal)."),
    ranks: int = typer.Option(2, help="DeepSpeed ranks (CPU processes) per training run."),
    deepspeed: str = typer.Option(None, help="DeepSpeed config for training (default ds_configs/zero2.json)."),
    overwrite: Overwrite = False,
) -> None:
    """Synthetic data -> generalize -> score -> train 3 variants -> generate -> evaluate -> compare."""
    from rich.console import Console

    from dftrain.experiments.demo import build_stages, write_report
    from dftrain.experiments.stages import run_stages, summary_table
    from dftrain.outputs import claim_output

    console = Console(stderr=True)
    stages = build_stages(out, profile=profile, ranks=ranks, zero_config=deepspeed)
    with claim_output(out, "demo", overwrite=overwrite):
        results = run_stages(out, stages, console=console)
        report = write_report(out)
    console.print(summary_table(results))
    console.print(f"report: {report}")
