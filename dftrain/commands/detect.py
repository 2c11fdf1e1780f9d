"""`dftrain detect`: flag memorized prompts from the text-conditional noise magnitude (Wen et al., ICLR 2024)."""

from __future__ import annotations

from pathlib import Path

import typer

from dftrain.commands import shards_option

app = typer.Typer()


@app.command("detect")
def detect(
    model: Path = typer.Option(..., "--model", help="Diffusers pipeline folder."),
    out: Path = typer.Option(..., "--out", help="JSON lines, one per prompt (+ OUT.summary.json)."),
    shards: list[Path] | None = shards_option("Score the ORIGINAL captions of these training shards.", required=False),
    prompts: Path | None = typer.Option(None, "--prompts", help="Score the prompts of this file (one per line)."),
    text: list[str] = typer.Option([], "--text", help="Score this prompt (repeatable)."),
    num_prompts: int | None = typer.Option(None, help="With --shards: a seeded sample of captions (default all)."),
    steps: int = typer.Option(50, help="Sampling schedule length."),
    first_steps: int = typer.Option(5, help="Measured steps at its start (Wen et al.: even 1 works)."),
    generations: int = typer.Option(4, help="Starting noises per prompt."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance of the sampled trajectory."),
    threshold: float | None = typer.Option(None, help="Flag scores above this (default: median + 3 x 1.4826 x MAD)."),
    seed: int = typer.Option(0, help="Seed of the starting noises (and of the --shards sample)."),
    batch_size: int = typer.Option(8, help="Prompts per UNet call."),
    device: str | None = typer.Option(None, help="Torch device (default cuda when available)."),
    dtype: str = typer.Option("auto", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."),
) -> None:
    """Score prompts by ||eps(x_t, prompt) - eps(x_t, "")|| over the first sampling steps; flag outliers."""
    import logging

    from dftrain.evaluate.detect import DetectOptions, load_prompts
    from dftrain.evaluate.detect import detect as run_detect

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = DetectOptions(steps=steps, first_steps=first_steps, generations=generations, guidance=guidance,
                            seed=seed, batch_size=batch_size, threshold=threshold, device=device, dtype=dtype)
    options.check()
    items = load_prompts(shards=shards, prompts_file=prompts, texts=text, num_prompts=num_prompts, seed=seed)
    summary = run_detect(model, items, out, options)
    typer.echo(f"{summary['prompts']} prompts scored, {summary['flagged']} flagged above {summary['threshold']:.4g} "
               f"({summary['threshold_rule']}); median {summary['score_median']:.4g}, max {summary['score_max']:.4g} "
               f"-> {out}")
