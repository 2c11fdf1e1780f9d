"""`dftrain generalize`: rewrite every caption of a shard folder into a general one with an LLM."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from dftrain.commands import DEFAULT_LOG_INTERVAL, LogInterval, shards_option

app = typer.Typer()


@app.command("generalize")
def generalize(
    shards: list[Path] = shards_option("Input shards."),
    out: Path = typer.Option(..., "--out", help="Output shard folder (same shard names and keys)."),
    backend: str = typer.Option("embedded", help="embedded (SmolLM2-135M, CPU) | transformers | vllm (GPU)."),
    model: str | None = typer.Option(None, help="Local model folder or .gguf file (vllm: a folder). "
                                     "Default: the embedded model."),
    batch_size: int = typer.Option(32, help="Unique captions per LLM call."),
    max_words: int = typer.Option(4, help="At most this many words per caption (paper: fewer than 5)."),
    fallback: str = typer.Option("retry,rule,original", help="Steps after a rejected LLM output, in order: "
                                 "retry (stricter prompt), rule (rule-based generalizer), original | drop."),
    prompt_template: str | None = typer.Option(None, help="Chat prompt with {caption} (default for "
                                               "transformers/vllm: the paper's prompt)."),
    few_shot: Path | None = typer.Option(None, help="File of `specific => general` lines for a raw completion "
                                         "prompt (default for embedded: the packaged list)."),
    target_generality: float | None = typer.Option(None, help="Re-ask for captions whose generality score "
                                                   "stays below this (needs the score module)."),
    rounds: int = typer.Option(2, help="At most this many re-asks with --target-generality."),
    max_input_chars: int = typer.Option(512, help="Captions are cut to this for the prompt "
                                        "(orig_caption keeps the full text)."),
    score: str = typer.Option("auto", help="Generality scores before/after in json: auto | on | off."),
    faithful: bool = typer.Option(True, "--faithful/--no-faithful", help="Accept an answer only if it keeps a "
                                  "head noun of the caption (or a WordNet synonym / non-abstract hypernym)."),
    rank: int | None = typer.Option(None, help="This process's rank (default: RANK or SLURM_PROCID, else 0)."),
    world_size: int | None = typer.Option(None, help="Number of ranks (default: WORLD_SIZE or SLURM_NTASKS, "
                                          "else 1)."),
    dtype: str = typer.Option("float32", help="transformers/embedded: float32 (batch-invariant) | bfloat16; "
                              "vllm: auto | bfloat16 | float16."),
    device: str | None = typer.Option(None, help="transformers/embedded: cpu | cuda | auto (default cpu)."),
    tensor_parallel_size: int = typer.Option(1, help="vllm: GPUs per model replica."),
    strict: bool = typer.Option(False, help="Fail on the first bad sample instead of skipping and counting it."),
    overwrite: bool = typer.Option(False, help="Redo this rank's shards even when finished."),
    finalize: bool = typer.Option(False, "--finalize", help="Only write OUT/manifest.json from the finished "
                                  "shards (after all ranks ran)."),
    progress: bool = typer.Option(True, help="Show progress on rank 0 (a bar, or a line every --log-interval)."),
    log_interval: LogInterval = DEFAULT_LOG_INTERVAL,
) -> None:
    """Generalize every caption with an LLM (paper: arXiv 2309.07254, section 3.1); resumable, split by rank."""
    import logging

    from dftrain.generalize.stage import finalize as write_manifest
    from dftrain.generalize.stage import generalize_shards

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = " ".join(["dftrain", *sys.argv[1:]])
    if finalize:
        write_manifest(shards, out, command=command, require_all=True)
        typer.echo(f"wrote {out / 'manifest.json'}")
        return
    if backend == "vllm":
        options = {"tensor_parallel_size": tensor_parallel_size, "dtype": "auto" if dtype == "float32" else dtype}
    else:
        options = {"dtype": dtype, "device": device or "cpu"}
    report = generalize_shards(
        shards, out, backend=backend, model=model, backend_options=options, batch_size=batch_size,
        max_words=max_words, fallback=fallback, prompt_template=prompt_template, few_shot=few_shot,
        target_generality=target_generality, rounds=rounds, max_input_chars=max_input_chars, score=score,
        rank=rank, world_size=world_size, strict=strict, overwrite=overwrite, command=command, progress=progress,
        faithful=faithful)
    typer.echo(json.dumps(report.to_dict()))
    if not report.manifest_written:
        typer.echo(f"rank {report.rank}: shards of other ranks are not finished yet; the last rank to finish "
                   f"writes {out / 'manifest.json'} (or run with --finalize)", err=True)
