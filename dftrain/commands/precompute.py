"""`dftrain precompute`: VAE latents once (text-encoder states too with --text-states), so training skips the VAE."""

from __future__ import annotations

import typer

from dftrain.commands import DEFAULT_LOG_INTERVAL, LogInterval, shards_option

app = typer.Typer()


@app.command("precompute")
def precompute(
    model: str = typer.Option(..., help="Diffusers pipeline folder (vae, text_encoder, tokenizer)."),
    shards: list[str] = shards_option("Training shards (images + captions)."),
    out: str = typer.Option(..., help="Output folder for the latent shards of the training set."),
    objects: str = typer.Option(None, help="Object-bank shard folder to encode too."),
    objects_out: str = typer.Option(None, help="Output folder for the object-bank latents (default: OUT-objects)."),
    resolution: int = typer.Option(None, help="Image size (default: UNet sample_size x VAE factor)."),
    random_flip: bool = typer.Option(True, "--random-flip/--no-random-flip", help="Also encode the flipped image (training set and object bank)."),
    caption_field: str = typer.Option("txt", help="txt | orig: which caption's text states to store (--text-states)."),
    text_states: bool = typer.Option(False, "--text-states/--no-text-states",
                                     help="Also store text-encoder states (~5x the latents' bytes; training then skips "
                                          "the text encoder but cannot change caption text)."),
    batch_size: int = typer.Option(16, help="Images per encoder call."),
    dtype: str = typer.Option("fp16", help="Storage dtype: fp16 | bf16 | fp32."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an output folder dftrain did not make."),
    rank: int = typer.Option(None, help="This worker's rank (default: RANK / SLURM_PROCID / 0)."),
    world_size: int = typer.Option(None, help="Number of workers (default: WORLD_SIZE / SLURM_NTASKS / 1)."),
    log_interval: LogInterval = DEFAULT_LOG_INTERVAL,
) -> None:
    """Encode shards into latent shards (manifest kind "latents") for `dftrain train --shards OUT`."""
    import logging
    import sys

    from dftrain.errors import ConfigError
    from dftrain.train.precompute import precompute as run

    if caption_field not in ("txt", "orig"):
        raise ConfigError(f"--caption-field must be txt or orig, got {caption_field!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result = run(
        model, shards, out, objects=objects, objects_out=objects_out, resolution=resolution, flip=random_flip,
        caption_field=caption_field, batch_size=batch_size, dtype=dtype, rank=rank, world_size=world_size,
        text_states=text_states, overwrite=overwrite, command="dftrain precompute " + " ".join(sys.argv[2:]),
    )
    for name, part in result.items():
        state = "manifest written" if part["manifest"] else "waiting for other ranks' shards"
        typer.echo(f"{name}: {part['samples']} samples encoded, {part['skipped']} skipped -> {part['out']} ({state})")
