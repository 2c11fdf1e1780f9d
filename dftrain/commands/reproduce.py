"""`dftrain reproduce`: the paper's effect at equal budget over seeds, from one experiment file."""

from __future__ import annotations

from pathlib import Path

import typer

from dftrain.commands import Overwrite

app = typer.Typer()


@app.command("reproduce")
def reproduce(
    config: Path = typer.Option(Path("experiments/mini.yaml"), "--config", help="Experiment file (YAML)."),
    profile: str = typer.Option(None, help="Profile of the file: cpu (2 cores) | gpu (one GPU); default: the first listed."),
    out: Path = typer.Option(None, "--out", help="Run folder; a re-run reuses finished stages. Default: "
                             "runs/reproduce for the file's first profile, runs/reproduce-PROFILE for the others."),
    seeds: str = typer.Option(None, help="Comma-separated seeds, e.g. 0,1,2 (overrides the file)."),
    variants: str = typer.Option(None, help="Comma-separated variants (overrides the file), e.g. "
                                 "baseline,generalized,dual_fusion,generalized_dual_fusion,embed_noise."),
    parallel: int = typer.Option(None, min=1, help="(variant, seed) runs at a time (overrides run.parallel)."),
    check: bool = typer.Option(False, "--check", help="Validate the experiment and print the plan; run nothing."),
    report_only: bool = typer.Option(False, "--report-only", help="Only (re)write the report from what finished."),
    overwrite: Overwrite = False,
) -> None:
    """Train every variant for several seeds on data built to be memorized; report replication and fit."""
    from rich.console import Console

    from dftrain.errors import DftrainError
    from dftrain.experiments.config import load_experiment
    from dftrain.experiments.plan import build_plan, check_inputs
    from dftrain.experiments.report import write_report
    from dftrain.experiments.run import run_plan

    console = Console(stderr=True)
    overrides = {"run": {"parallel": parallel}} if parallel else None
    experiment = load_experiment(config, profile, seeds=seeds, variants=variants, overrides=overrides)
    if out is None:
        out = Path("runs/reproduce" if experiment.profile == experiment.default_profile
                   else f"runs/reproduce-{experiment.profile}")
    plan = build_plan(experiment, out)
    if check:
        typer.echo(f"experiment {experiment.name}, profile {experiment.profile}: valid")
        typer.echo(f"seeds {experiment.seeds}; variants {', '.join(v.name for v in experiment.variants)}")
        for stage in plan.setup + [s for chain in plan.chains for s in chain.stages]:
            typer.echo(f"  {stage.name}: dftrain {' '.join(stage.args)}")
        return
    if report_only:
        typer.echo(f"report: {write_report(experiment, plan.layout)}")
        return
    check_inputs(experiment)
    from dftrain.outputs import mark_output

    mark_output(out, "reproduce", overwrite=overwrite)  # its stages lock themselves (several may run at once)
    console.print(f"reproduce {experiment.name} ({experiment.profile}): {len(experiment.variants)} variants x "
                  f"{len(experiment.seeds)} seeds, {experiment.run['parallel']} at a time -> {out}")
    outcome = run_plan(plan, experiment, console=console)
    report = write_report(experiment, plan.layout, outcome)
    console.print(f"ran {len(outcome.ran)} stages, reused {len(outcome.reused)}, "
                  f"{outcome.seconds.get('total', 0):.0f} s; report: {report}")
    if outcome.failed:
        raise DftrainError(f"{len(outcome.failed)} run(s) failed ({', '.join(outcome.failed)}); the report covers "
                           f"what finished; logs in {out / 'logs'}")
