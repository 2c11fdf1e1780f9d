"""`dftrain generate`: images prompted with the ORIGINAL training captions, split across ranks, resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from dftrain.commands import DEFAULT_LOG_INTERVAL, LogInterval, Overwrite, shards_option

app = typer.Typer()


@app.command("generate")
def generate(
    model: Path = typer.Option(..., "--model", help="Diffusers pipeline folder (dftrain train/export, or SD 2.1)."),
    shards: list[Path] = shards_option("Training shards whose ORIGINAL captions are the prompts."),
    out: Path = typer.Option(..., "--out", help="Generations folder (images + prompts.jsonl)."),
    num_prompts: int | None = typer.Option(None, help="Seeded sample of training captions (default: all)."),
    per_prompt: int = typer.Option(1, help="Images per prompt."),
    steps: int = typer.Option(50, help="Denoising steps."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, help="Seed of the prompt sample and of every image."),
    resolution: int | None = typer.Option(None, help="Image size (default: the resolution it was trained at, from dftrain_export.json; else the pipeline's native size)."),
    batch_size: int = typer.Option(4, help="Prompts per pipeline call."),
    device: str | None = typer.Option(None, help="Torch device (default cuda when available)."),
    dtype: str = typer.Option("auto", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16."),
    rank: int | None = typer.Option(None, help="This process's rank (default RANK / SLURM_PROCID / 0)."),
    world_size: int | None = typer.Option(None, help="Number of ranks (default WORLD_SIZE / SLURM_NTASKS / 1)."),
    overwrite: Overwrite = False,
    prompt_noise: bool = typer.Option(False, "--prompt-noise/--no-prompt-noise",
                                      help="Mitigation: Gaussian noise on the prompt embeddings (Somepalli et al.)."),
    prompt_noise_sigma: float = typer.Option(0.1, help="Its sigma (theirs: 0.1)."),
    prompt_augment: str | None = typer.Option(
        None, help="Mitigation: rand_numb_add | rand_word_add | rand_word_repeat (insert numbers / tokens / own words)."),
    prompt_augment_repeats: int = typer.Option(4, help="Insertions per prompt (theirs: 4)."),
    log_interval: LogInterval = DEFAULT_LOG_INTERVAL,
) -> None:
    """Generate images for training captions; rerun with the same arguments to resume."""
    import logging

    from dftrain.evaluate.generate import GenerateOptions
    from dftrain.evaluate.generate import generate as run_generate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = run_generate(model, shards, out, GenerateOptions(
        num_prompts=num_prompts, per_prompt=per_prompt, steps=steps, guidance=guidance, seed=seed,
        resolution=resolution, batch_size=batch_size, device=device, dtype=dtype, rank=rank, world_size=world_size,
        overwrite=overwrite, prompt_noise=prompt_noise, prompt_noise_sigma=prompt_noise_sigma, prompt_augment=prompt_augment,
        prompt_augment_repeats=prompt_augment_repeats))
    state = "complete" if summary["complete"] else "partial (other ranks still running, or rerun to finish)"
    typer.echo(f"rank {summary['rank']}/{summary['world_size']}: generated {summary['generated']}, "
               f"{summary['already_done']} already there; {out / 'prompts.jsonl'} lists {summary['merged']} of "
               f"{summary['planned']} images ({state})")
