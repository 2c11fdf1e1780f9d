"""`dftrain evaluate`: replication (copy detection vs the training set), fit and diversity of generations.

The options are the fields of EvaluateOptions (dftrain/evaluate/options.py), defined there once.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dftrain.evaluate.options import EvaluateOptions
from dftrain.options import options_command

app = typer.Typer()


@app.command("evaluate")
@options_command(EvaluateOptions)
def evaluate(given: dict) -> None:
    """Match every generation to its nearest training image and write the replication report."""
    import logging

    from dftrain.evaluate.options import build_evaluate_options
    from dftrain.evaluate.run import evaluate as run_evaluate
    from dftrain.progress import set_default_interval

    options = build_evaluate_options(given)
    set_default_interval(options.log_interval)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU variant it tries
    out = Path(options.out)
    report = run_evaluate(options.generations, options.train_shards, out, options)
    if report.get("status") == "partial":
        cache = report["cache"]
        typer.echo(
            f"rank {report['rank']} of {report['world_size']}: training descriptors computed for "
            f"{cache['train_shards_computed']} shard(s), reused for {cache['train_shards_reused']}; "
            f"{report['missing_shards']} of {report['shards']} shards still missing"
            + ("; run evaluate again with --world-size 1 when every rank has finished, to merge"
               if report["missing_shards"] or report["rank"] else ""))
        return
    typer.echo(
        f"{report['n_generations']} generations vs {report['n_train']} training images ({report['descriptor']}): "
        f"sim_p95 {report['sim_p95']:.4f}, frac_above_0_5 {report['frac_above_0_5']:.4f}, "
        f"frac_above_threshold {report['frac_above_threshold']:.4f} (threshold {report['threshold']:g}), "
        f"bg_sim_p95 {_f(report['bg_sim_p95'])}, "
        f"own_match_rate {_f(report['own_match_rate'])}, fid {_f(report['fid'])}, "
        f"fd_embedded {_f(report['fd_embedded'])}")
    typer.echo(f"wrote {out / 'report.md'}")


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
