"""`dftrain demo`: the memorization regime at demo size, by the experiment runner of `dftrain reproduce`."""

from pathlib import Path

import typer

from dftrain.commands import Overwrite

app = typer.Typer()


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run folder; a re-run reuses the finished stages."),
    profile: str = typer.Option("default", help="Size: 'default' (<= 10 min on 2 cores) or 'ci' (minimal)."),
    ranks: int = typer.Option(None, help="DeepSpeed ranks (CPU processes) per training run (default: the demo file's, 1)."),
    deepspeed: str = typer.Option(None, help="DeepSpeed config for training (default: the packaged zero2.json)."),
    overwrite: Overwrite = False,
) -> None:
    """Regime data -> tiny model -> generalize -> train baseline and the mitigations -> generate -> evaluate -> report."""
    from rich.console import Console

    from dftrain.experiments.demo import load_demo
    from dftrain.experiments.plan import build_plan, check_inputs
    from dftrain.experiments.report import write_report
    from dftrain.experiments.run import run_plan
    from dftrain.outputs import claim_output

    console = Console(stderr=True)
    experiment = load_demo(profile, ranks, deepspeed)
    plan = build_plan(experiment, out)
    check_inputs(experiment)
    with claim_output(out, "demo", overwrite=overwrite):
        outcome = run_plan(plan, experiment, console=console)
        report = write_report(experiment, plan.layout, outcome, kind="demo")
    console.print(f"ran {len(outcome.ran)} stages, reused {len(outcome.reused)}, "
                  f"{outcome.seconds.get('total', 0):.0f} s; report: {report}")
    if outcome.failed:
        from dftrain.errors import DftrainError

        raise DftrainError(f"{len(outcome.failed)} run(s) failed ({', '.join(outcome.failed)}); logs in {out / 'logs'}")
