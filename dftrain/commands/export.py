"""`dftrain export`: a training checkpoint -> diffusers pipeline folder (safetensors)."""

from __future__ import annotations

import typer

app = typer.Typer()


@app.command("export")
def export(
    checkpoint: str = typer.Argument(..., help="Run folder, its checkpoints/ folder, or a stepNNNNNNNN folder."),
    out: str = typer.Option(..., help="Pipeline folder to write (StableDiffusionPipeline.from_pretrained loads it)."),
    model: str = typer.Option(None, help="Pipeline folder for the frozen parts (default: the one the run trained from)."),
    ema: bool = typer.Option(None, "--ema/--no-ema", help="Export the EMA weights (default: when the checkpoint has them)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out."),
) -> None:
    """Consolidate the UNet (zero_to_fp32 for ZeRO) and write a complete pipeline folder."""
    from dftrain.train.export import export_pipeline

    path = export_pipeline(checkpoint, out, model=model, ema=ema, overwrite=overwrite)
    typer.echo(f"exported {path}")
