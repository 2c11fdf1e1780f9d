"""`dftrain shard build | objects | synthetic | validate | info`: webdataset shards and their manifests."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import typer

from dftrain.commands import DEFAULT_LOG_INTERVAL, LogInterval, Overwrite

app = typer.Typer(help="Build, validate and inspect webdataset shards.", no_args_is_help=True)


def _setup_logging() -> None:
    # Skipped samples are logged (logger "dftrain.shards") with their key; show them unless the caller
    # configured logging already.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _command_line(*parts: object) -> str:
    words: list[str] = ["dftrain", "shard"]
    for part in parts:
        if part is None or part is False:
            continue
        words.append(str(part))
    return shlex.join(words)


def _print_build_report(report, what: str) -> None:
    typer.echo(f"{what}: {report.written} samples in {report.shards} shard(s) -> {report.out}")
    if report.stats.total_skipped:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(report.stats.skipped.items()))
        typer.echo(f"skipped {report.stats.total_skipped} ({reasons}); keys are in the log above")
    if report.duplicates:
        typer.echo(f"{report.duplicates} duplicate(s) merged (repeated keys, captions or images); see the log above")


@app.command("build")
def build(
    images: Path = typer.Option(..., "--images", help="Folder of images (matched by file name: see --match)."),
    captions: Path = typer.Option(..., "--captions", help="Captions, read as a stream: .jsonl, .csv/.tsv (key, "
                                  "caption) or .parquet (img2dataset's key, caption; needs pyarrow); .json "
                                  "{key: caption, or a list of captions} is read whole; a folder: all of its "
                                  "captions files in name order."),
    out: Path = typer.Option(..., "--out", help="Output folder for the tars and manifest.json."),
    samples_per_shard: int = typer.Option(10000, "--samples-per-shard", min=1, help="Samples per tar."),
    match: str = typer.Option("index", "--match", help="index: list the image folder once (a key is the relative "
                              "path without suffix, or a unique file stem); path: no listing, constant memory "
                              "(a key is the relative path without suffix)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad input instead of skipping it."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes that decode and convert images."),
    rank: int = typer.Option(None, help="This worker's rank (default: RANK / SLURM_PROCID / 0): it writes shards "
                             "rank, rank + world size, ..."),
    world_size: int = typer.Option(None, help="Number of workers (default: WORLD_SIZE / SLURM_NTASKS / 1)."),
    merge: bool = typer.Option(False, "--merge", help="Only write the manifest from the ranks' part files "
                               "(same options as the ranks)."),
    overwrite: Overwrite = False,
    log_interval: LogInterval = DEFAULT_LOG_INTERVAL,
) -> None:
    """Training shards (jpg, txt, json) from an image folder and a captions file."""
    from dftrain.distributed import rank_info
    from dftrain.errors import ConfigError, DftrainError
    from dftrain.progress import progress
    from dftrain.shards.build import build_shards, merge_captions_build

    _setup_logging()
    try:
        info = rank_info(rank, world_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    command = _command_line("build", "--images", images, "--captions", captions, "--out", out,
                            "--samples-per-shard", samples_per_shard, "--match", match, strict and "--strict")
    if merge:
        manifest = merge_captions_build(images, captions, out, samples_per_shard=samples_per_shard, match=match,
                                        world_size=info.world_size, command=command)
        if manifest is None:
            raise DftrainError(f"{out}: not every rank's part file of this build is there yet "
                               "(rerun the missing ranks with the same options)")
        typer.echo(f"{out}: manifest written, {len(manifest.shards)} shards, {manifest.total_samples} samples")
        return
    with progress("shard build", None, unit="captions", enabled=info.is_main) as shown:
        report = build_shards(images, captions, out, samples_per_shard=samples_per_shard, strict=strict,
                              command=command, workers=workers, on_sample=shown.advance, overwrite=overwrite,
                              rank=info.rank, world_size=info.world_size, match=match)
    _print_build_report(report, "built" if info.world_size == 1 else f"rank {info.rank} of {info.world_size} built")
    if report.unused_images:
        typer.echo(f"{report.unused_images} image(s) had no caption and were not used")
    if not report.manifest_written:
        typer.echo(f"waiting for rank(s) {report.waiting_for}: the last rank to finish writes {out / 'manifest.json'} "
                   "(or run with --merge)")


@app.command("objects")
def objects(
    imagefolder: Path = typer.Option(..., "--imagefolder", help="Class folders, or a Tiny-ImageNet root (words.txt)."),
    out: Path = typer.Option(..., "--out", help="Output folder for the tars and manifest.json."),
    samples_per_shard: int = typer.Option(10000, "--samples-per-shard", min=1, help="Samples per tar."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad image instead of skipping it."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes that decode and convert images."),
    overwrite: Overwrite = False,
    log_interval: LogInterval = DEFAULT_LOG_INTERVAL,
) -> None:
    """A labelled object bank (jpg, cls, json with the class name) from class folders."""
    from dftrain.progress import progress
    from dftrain.shards.build import build_objects, count_inputs

    _setup_logging()
    command = _command_line("objects", "--imagefolder", imagefolder, "--out", out,
                            "--samples-per-shard", samples_per_shard, strict and "--strict")
    total = count_inputs(imagefolder) if imagefolder.is_dir() else 0
    with progress("shard objects", total, unit="images") as shown:
        report = build_objects(imagefolder, out, samples_per_shard=samples_per_shard, strict=strict,
                               command=command, workers=workers, on_sample=shown.advance, overwrite=overwrite)
    _print_build_report(report, f"object bank with {len(report.classes)} classes")


@app.command("synthetic")
def synthetic(
    out: Path = typer.Option(..., "--out", help="Output folder: OUT/train and OUT/objects."),
    n: int = typer.Option(300, "--n", min=1, help="Number of training images."),
    size: int = typer.Option(64, "--size", min=8, help="Image side in pixels."),
    dup_fraction: float | None = typer.Option(None, "--dup-fraction", min=0.0, max=1.0,
                                              help="Fraction of images repeated several times, as in web data "
                                                   "(default 0.1; not with --dup-images)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the dataset is deterministic for a seed)."),
    samples_per_shard: int = typer.Option(100, "--samples-per-shard", min=1, help="Samples per tar."),
    objects_per_class: int = typer.Option(20, "--objects-per-class", min=1, help="Object-bank images per class."),
    dup_images: int | None = typer.Option(
        None, "--dup-images", min=0, help="Memorization regime: compositional scenes, --n of them unique, this many "
        "of those repeated --dup-factor times with their caption (see docs/synthetic.md)."),
    dup_factor: int = typer.Option(25, "--dup-factor", min=2, help="Regime: copies of each duplicated image."),
    heldout: int = typer.Option(200, "--heldout", min=0, help="Regime: unseen scenes in OUT/heldout (fit measure)."),
    overwrite: Overwrite = False,
) -> None:
    """The embedded synthetic dataset: specific captions, duplicated images, and an object bank."""
    from dftrain.errors import ConfigError
    from dftrain.shards.manifest import Manifest
    from dftrain.synthetic import write_regime, write_synthetic

    _setup_logging()
    if dup_images is None:
        write_synthetic(out, n=n, size=size, dup_fraction=0.1 if dup_fraction is None else dup_fraction, seed=seed,
                        samples_per_shard=samples_per_shard, objects_per_class=objects_per_class, overwrite=overwrite)
    elif dup_fraction is not None:
        raise ConfigError("--dup-fraction is for the plain synthetic set; with --dup-images use --dup-factor")
    else:
        write_regime(out, n=n, dup_images=dup_images, dup_factor=dup_factor, heldout=heldout, size=size, seed=seed,
                     samples_per_shard=samples_per_shard, objects_per_class=objects_per_class, overwrite=overwrite)
    for part in ("train", "heldout", "objects"):
        folder = out / part
        if (folder / "manifest.json").is_file():
            manifest = Manifest.load(folder)
            typer.echo(f"{folder}: {manifest.total_samples} samples in {len(manifest.shards)} shard(s)")


FOLDERS_HELP = "Shard folders (with manifest.json), or .txt list files of them (one a line, # comments)."


@app.command("validate")
def validate(
    folders: list[Path] = typer.Argument(..., help=FOLDERS_HELP, metavar="DIR|LIST..."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first problem."),
) -> None:
    """Check every tar against the manifest (exists, size, sha256, count) and decode every sample."""
    from dftrain.shards.inputs import input_folders
    from dftrain.shards.manifest import ShardError
    from dftrain.shards.validate import validate as validate_folder

    _setup_logging()
    failed = 0
    try:
        for folder in input_folders(folders):
            report = validate_folder(folder, strict=strict)
            typer.echo(
                f"{folder}: kind {report.kind or '?'}, shards {report.shards_ok}/{report.shards_expected} ok, "
                f"samples {report.samples_ok}/{report.samples_expected} ok"
            )
            for warning in report.warnings:
                typer.echo(f"warning: {warning}")
            for problem in report.problems:
                typer.echo(f"problem: {problem}")
            if not report.ok:
                typer.echo(f"{len(report.problems)} problem(s)")
                failed += 1
    except ShardError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    if failed:
        raise typer.Exit(code=1)
    typer.echo("ok")


@app.command("adopt")
def adopt(
    folder: Path = typer.Argument(..., help="A folder of webdataset tars (img2dataset output as it is)."),
    kind: str = typer.Option("train", help="train | generalized | objects: which fields every sample needs."),
    rank: int = typer.Option(None, help="This worker's rank (default: RANK / SLURM_PROCID / 0)."),
    world_size: int = typer.Option(None, help="Number of workers (default: WORLD_SIZE / SLURM_NTASKS / 1)."),
    merge: bool = typer.Option(False, "--merge", help="Only write the manifest from the ranks' part files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Index again a folder that has a manifest."),
    log_interval: LogInterval = DEFAULT_LOG_INTERVAL,
) -> None:
    """Index existing tars into manifest.json in place (counts, sizes, sha256), checking every sample."""
    import json

    from dftrain.distributed import rank_info
    from dftrain.errors import DftrainError
    from dftrain.shards.adopt import adopt as adopt_folder
    from dftrain.shards.adopt import merge_parts
    from dftrain.shards.limits import current_limits

    _setup_logging()
    info = rank_info(rank, world_size)
    command = _command_line("adopt", folder, "--kind", kind)
    if merge:
        manifest = merge_parts(folder, info.world_size, kind, command, current_limits())
        if manifest is None:
            raise DftrainError(f"{folder}: not every rank's part file is there yet (rerun the missing ranks)")
        typer.echo(f"{folder}: manifest written, {len(manifest.shards)} shards, {manifest.total_samples} samples")
        return
    report = adopt_folder(folder, kind=kind, rank=info.rank, world_size=info.world_size, overwrite=overwrite,
                          command=command, show_progress=True)
    for problem in report.problems[:20]:
        typer.echo(f"skipped: {problem}")
    if len(report.problems) > 20:
        typer.echo(f"... {len(report.problems) - 20} more (all: in the JSON summary below)")
    for name in report.excluded:
        typer.echo(f"left out: {name} (damaged tar)")
    if report.img2dataset:
        counts = report.img2dataset
        typer.echo(f"img2dataset: {counts.get('successes', '?')} downloaded of {counts.get('count', '?')}; "
                   f"{counts.get('failed_to_download', 0)} failed downloads and {counts.get('failed_to_resize', 0)} "
                   "failed resizes counted (not errors)")
    state = "manifest written" if report.manifest_written else f"waiting for {report.waiting_for} rank(s)"
    typer.echo(f"{folder}: {report.tars_indexed} tars, {report.samples_ok}/{report.samples_found} samples usable "
               f"({len(report.problems)} skipped by every reader); {state}")
    typer.echo(json.dumps(report.to_dict()))


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{count} B"
        size /= 1000
    return f"{count} B"


@app.command("info")
def info(folders: list[Path] = typer.Argument(..., help=FOLDERS_HELP, metavar="DIR|LIST...")) -> None:
    """Kind, sample and shard counts, size and the command that made a shard folder."""
    from dftrain.shards.inputs import input_folders, shard_set
    from dftrain.shards.manifest import Manifest

    chosen = input_folders(folders)
    for folder in chosen:
        _print_info(folder, Manifest.load(folder))
    if len(chosen) > 1:
        total = shard_set(chosen)  # refuses repeated shards and mixed kinds, as every stage would
        typer.echo(f"together: {len(chosen)} folders, {total.total_samples} samples in {len(total.members)} "
                   f"shards, kind {total.kind}")


def _print_info(folder: Path, manifest) -> None:
    typer.echo(f"folder:   {folder}")
    typer.echo(f"kind:     {manifest.kind}")
    typer.echo(f"samples:  {manifest.total_samples}")
    typer.echo(f"shards:   {len(manifest.shards)}")
    typer.echo(f"size:     {_human_bytes(manifest.total_bytes)}")
    typer.echo(f"created:  {manifest.created}")
    typer.echo(f"command:  {manifest.command}")
    classes = manifest.extra.get("classes")
    if classes:
        names = ", ".join(str(c.get("class_name")) for c in classes[:10])
        more = f" (+{len(classes) - 10} more)" if len(classes) > 10 else ""
        typer.echo(f"classes:  {len(classes)}: {names}{more}")
