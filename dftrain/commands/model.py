"""`dftrain model ...`: build the embedded tiny pipeline, describe a pipeline folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Build the embedded tiny Stable-Diffusion-shaped model; describe model folders.",
                  no_args_is_help=True)


@app.command("tiny")
def tiny(
    out: Path = typer.Option(..., "--out", help="Folder to write the pipeline to (diffusers save_pretrained layout)."),
    seed: int = typer.Option(0, help="Seed for weights, tokenizer corpus and the VAE's training images."),
    resolution: int = typer.Option(64, help="Image size in pixels (latents are resolution / 4)."),
    vae_steps: int = typer.Option(None, "--vae-steps", help="VAE fit steps (default: the preset's; cached after the first build)."),
    prediction_type: str = typer.Option("epsilon", "--prediction-type", help="epsilon or v_prediction."),
) -> None:
    """Build the tiny SD-shaped pipeline (UNet, VAE, CLIP text encoder + tokenizer, DDPM scheduler) offline."""
    import logging

    from dftrain.model.info import describe_model
    from dftrain.model.tiny import DEFAULT_VAE_STEPS, build_tiny_pipeline

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = build_tiny_pipeline(
        out, seed=seed, resolution=resolution,
        vae_steps=DEFAULT_VAE_STEPS if vae_steps is None else vae_steps, prediction_type=prediction_type,
    )
    info = describe_model(folder)
    vae = info["dftrain"]["vae"]
    typer.echo(f"wrote {folder}")
    typer.echo("parameters: " + ", ".join(f"{k} {v:,}" for k, v in info["parameters"].items()))
    typer.echo(
        f"VAE: {'cached' if vae['cache_hit'] else 'fitted'} ({vae['steps']} steps), held-out PSNR "
        f"{vae['holdout_psnr_db']:.1f} dB (mean-colour baseline {vae['holdout_mean_colour_psnr_db']:.1f} dB)"
    )


@app.command("info")
def info(
    folder: Path = typer.Argument(..., help="A diffusers pipeline folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Parameter counts per component, resolution, prediction type (reads headers, not weights)."""
    from dftrain.model.info import describe_model

    described = describe_model(folder)
    if as_json:
        typer.echo(json.dumps(described, indent=2))
        return
    typer.echo(f"{described['folder']}")
    for name, count in described["parameters"].items():
        typer.echo(f"  {name:13s} {count:>14,} parameters")
    typer.echo(f"  resolution    {described['resolution']} px (latents {described['latent_channels']}x"
               f"{described['latent_size']}x{described['latent_size']}, scaling_factor {described['vae_scaling_factor']:.4f})")
    typer.echo(f"  prediction    {described['prediction_type']} ({described['scheduler']})")
    if "tokenizer_vocab" in described:
        typer.echo(f"  tokenizer     {described['tokenizer_vocab']} tokens")
