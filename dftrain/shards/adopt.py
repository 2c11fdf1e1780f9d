"""`dftrain shard adopt`: index existing webdataset / img2dataset tars into a manifest, in place.

img2dataset writes `00000.tar` (members `000000000.jpg/.txt/.json`), `00000.parquet` and
`00000_stats.json`, and no manifest, so every dftrain stage refuses the folder. Adopting reads
every tar once, exactly as the readers will (same key rule, same limits, every image decoded),
and writes `manifest.json` listing each readable tar with its sample count, size and sha256. The
tars are not rewritten: every field of each sample (img2dataset's per-sample json included) stays
as it is; samples that break a rule stay in the tar and are counted here, as every reader will
skip them. A damaged tar is left out of the manifest and reported. img2dataset's `*_stats.json`
(failed downloads, failed resizes) are summed into the manifest's extra: counted, not errors.

Split across nodes: rank r of w indexes tars r, r + w, ... and writes a part file; whichever rank
finds every part present writes the manifest (`--merge` does it by hand after a lost rank reran).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dftrain.distributed import split_for_rank
from dftrain.shards.limits import Limits, current_limits
from dftrain.shards.manifest import MANIFEST_NAME, Manifest, ShardError, ShardInfo, sha256_file
from dftrain.shards.parts import missing_parts, read_parts, remove_parts, write_part
from dftrain.shards.validate import REQUIRED_FIELDS, Problem, check_shard_samples

PART_PREFIX = ".adopt-part-"
IMG2DATASET_COUNTS = ("count", "successes", "failed_to_download", "failed_to_resize")


@dataclass
class AdoptReport:
    folder: Path
    tars_indexed: int = 0
    samples_found: int = 0
    samples_ok: int = 0
    problems: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # damaged tars left out of the manifest
    img2dataset: dict[str, int] = field(default_factory=dict)
    manifest_written: bool = False
    waiting_for: int = 0  # parts of other ranks not written yet

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "tars_indexed": self.tars_indexed, "samples_found": self.samples_found,
                "samples_ok": self.samples_ok, "problems": self.problems[:100], "problem_count": len(self.problems),
                "excluded": self.excluded, "img2dataset": self.img2dataset,
                "manifest_written": self.manifest_written, "waiting_for_ranks": self.waiting_for}


def img2dataset_counts(tar: Path) -> dict[str, int]:
    """The counts of img2dataset's `<shard>_stats.json` beside `tar` ({} when absent or unreadable)."""
    stats = tar.with_name(f"{tar.stem}_stats.json")
    try:
        data = json.loads(stats.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: int(data[k]) for k in IMG2DATASET_COUNTS if isinstance(data.get(k), int)}


def index_tars(tars: list[Path], kind: str, limits: Limits, on_tar: Callable[[int], None] | None = None) -> dict:
    """One rank's share: a ShardInfo per readable tar, the problems, the img2dataset counts.
    `on_tar(samples found)` after each tar (for a progress display)."""
    require = REQUIRED_FIELDS.get(kind, ())
    part: dict = {"shards": [], "problems": [], "excluded": [], "samples_ok": 0, "img2dataset": {}}
    seen_keys: dict[str, str] = {}  # keys must be unique within a rank's share (readers check per tar)

    def add(shard: str, key: str | None, reason: str, detail: str = "") -> None:
        part["problems"].append(str(Problem(shard, key, reason, detail)))

    for tar in tars:
        good, found, damaged = check_shard_samples(tar, None, require, seen_keys, add, limits)
        if on_tar is not None:
            on_tar(found)
        if damaged:
            part["excluded"].append(tar.name)
            continue
        part["shards"].append({"name": tar.name, "samples": found, "sha256": sha256_file(tar),
                               "bytes": tar.stat().st_size})
        part["samples_ok"] += good
        for name, count in img2dataset_counts(tar).items():
            part["img2dataset"][name] = part["img2dataset"].get(name, 0) + count
    return part


def merge_parts(folder: Path, world_size: int, kind: str, command: str, limits: Limits) -> Manifest | None:
    """The manifest from every rank's part (None while some are missing); part files are removed after."""
    if missing_parts(folder, PART_PREFIX, world_size):
        return None
    parts = read_parts(folder, PART_PREFIX, world_size)
    if parts is None:  # another rank merged them at this moment
        return Manifest.load(folder) if (folder / MANIFEST_NAME).is_file() else None
    shards = sorted((ShardInfo.from_dict(s) for part in parts for s in part["shards"]), key=lambda s: s.name)
    counts: dict[str, int] = {}
    for part in parts:
        for name, count in part["img2dataset"].items():
            counts[name] = counts.get(name, 0) + count
    extra = {"adopted": True, "limits": limits.to_dict(), "samples_ok": sum(p["samples_ok"] for p in parts),
             "problems": sum(len(p["problems"]) for p in parts),
             "excluded_tars": sorted(n for p in parts for n in p["excluded"])}
    if counts:
        extra["img2dataset"] = counts
    manifest = Manifest(kind=kind, shards=shards, command=command, extra=extra)
    manifest.save(folder)
    remove_parts(folder, PART_PREFIX, world_size)
    return manifest


def adopt(folder: str | os.PathLike, *, kind: str = "train", rank: int = 0, world_size: int = 1,
          overwrite: bool = False, command: str = "", limits: Limits | None = None,
          show_progress: bool = False) -> AdoptReport:
    from dftrain.progress import progress

    folder = Path(folder)
    limits = limits or current_limits()
    if not folder.is_dir():
        raise ShardError(f"not a folder: {folder}")
    if kind not in REQUIRED_FIELDS:
        raise ShardError(f"--kind must be one of {', '.join(REQUIRED_FIELDS)}, got {kind!r}")
    if (folder / MANIFEST_NAME).is_file() and not overwrite:
        raise ShardError(f"{folder} already has a {MANIFEST_NAME}: check it with `dftrain shard validate`, "
                         "or pass --overwrite to index its tars again")
    tars = sorted(folder.glob("*.tar"))
    if not tars:
        raise ShardError(f"no .tar files in {folder}")
    mine = split_for_rank(tars, rank, world_size)
    with progress("shard adopt", len(mine), unit="tars", enabled=show_progress and rank == 0) as shown:
        checked = [0]

        def tar_done(found: int) -> None:
            checked[0] += found
            shown.advance(samples=checked[0])

        part = index_tars(mine, kind, limits, on_tar=tar_done)
    write_part(folder, PART_PREFIX, rank, world_size, part)
    report = AdoptReport(folder, tars_indexed=len(part["shards"]), samples_ok=part["samples_ok"],
                         problems=part["problems"], excluded=part["excluded"], img2dataset=part["img2dataset"])
    report.samples_found = sum(s["samples"] for s in part["shards"])
    manifest = merge_parts(folder, world_size, kind, command, limits)
    report.manifest_written = manifest is not None
    report.waiting_for = 0 if manifest else len(missing_parts(folder, PART_PREFIX, world_size))
    return report
