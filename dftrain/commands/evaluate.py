"""`dftrain evaluate`: replication (copy detection vs the training set), fit and diversity of generations."""

from __future__ import annotations

from pathlib import Path

import typer

from dftrain.commands import DEFAULT_LOG_INTERVAL, LogInterval, Overwrite, shards_option

app = typer.Typer()


@app.command("evaluate")
def evaluate(
    generations: Path = typer.Option(..., "--generations", help="Generations folder (images + prompts.jsonl)."),
    train_shards: list[Path] = shards_option("Training shards.", "--train-shards"),
    out: Path = typer.Option(..., "--out", help="Output folder for matches.jsonl, report.json, report.md."),
    descriptor: str = typer.Option("embedded", help="Copy descriptor: embedded | sscd | dino | clip."),
    weights: Path | None = typer.Option(None, help="Descriptor weights: SSCD TorchScript file, or DINO/CLIP folder."),
    threshold: float | None = typer.Option(
        None, help="Copy threshold for frac_above_threshold (default: the descriptor's documented one: 0.5 for "
                   "SSCD, 0.7 for embedded); frac_above_0_5 always uses the paper's 0.5."),
    inception: Path | None = typer.Option(
        None, help="Inception TorchScript file for FID (else $DFTRAIN_INCEPTION; FID is null without one)."),
    search: str = typer.Option("exact", help="Retrieval: exact (chunked IndexFlatIP) or ivf."),
    nlist: int | None = typer.Option(None, help="IVF cells (default 4 sqrt(n_train))."),
    nprobe: int = typer.Option(16, help="IVF cells visited per query."),
    pq_m: int | None = typer.Option(None, help="IVF-PQ sub-vectors (compresses the index); default IVF-Flat."),
    reference_n: int = typer.Option(
        10_000, help="Seeded sample of training images for the background (train vs train), FID and the fit "
                     "figures (all when fewer); 10,000 is the paper's set size."),
    fd_embedded: bool = typer.Option(
        False, "--fd-embedded", help="With another descriptor, also embed the reference sample with the embedded "
                                     "descriptor for fd_embedded (always there with --descriptor embedded)."),
    rank: int | None = typer.Option(None, help="This process's rank (default RANK or SLURM_PROCID, else 0)."),
    world_size: int | None = typer.Option(
        None, help="Number of ranks sharing the training shards (default WORLD_SIZE or SLURM_NTASKS, else 1); "
                   "rank 0, or a later call with world size 1, merges."),
    cache_dir: Path | None = typer.Option(
        None, help="Descriptor cache folder (default $DFTRAIN_CACHE/descriptors); shared by all ranks."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the descriptor cache."),
    sscd_norm: str = typer.Option("paper", help="SSCD normalisation: paper (mean=std=0.5) or imagenet."),
    device: str | None = typer.Option(None, help="Torch device for sscd/dino/clip/inception (default cuda if present)."),
    grid_size: int = typer.Option(8, help="Most-copied generations shown in the grid."),
    seed: int = typer.Option(0, help="Seed for the reference sample (and the IVF training sample)."),
    overwrite: Overwrite = False,
    log_interval: LogInterval = DEFAULT_LOG_INTERVAL,
) -> None:
    """Match every generation to its nearest training image and write the replication report."""
    import logging

    from dftrain.evaluate.retrieval import IVFParams
    from dftrain.evaluate.run import EvaluateOptions
    from dftrain.evaluate.run import evaluate as run_evaluate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU variant it tries
    options = EvaluateOptions(
        descriptor=descriptor, weights=weights, threshold=threshold, inception=inception, search=search,
        ivf=IVFParams(nlist=nlist, nprobe=nprobe, pq_m=pq_m), reference_n=reference_n, fd_embedded=fd_embedded,
        cache_dir=cache_dir, use_cache=not no_cache, grid_size=grid_size, seed=seed, sscd_norm=sscd_norm,
        device=device, overwrite=overwrite, rank=rank, world_size=world_size)
    report = run_evaluate(generations, train_shards, out, options)
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
