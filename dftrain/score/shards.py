"""`dftrain score --shards DIR`: score every sample's training caption and its original caption.

Per sample the `txt` caption is scored, and the original caption from `json`
(`orig_caption` in generalized shards, else `caption` in training shards) when
present. One JSON line per (sample, field) goes to DIR/scores.jsonl:
{"key", "shard", "field": "txt" | "orig_caption" | "caption", "caption", <scores>}.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dftrain.errors import DftrainError
from dftrain.score.io import plot_histogram, summarize_rows, write_jsonl

log = logging.getLogger("dftrain.score")

ORIGINAL_FIELDS = ("orig_caption", "caption")  # first one present wins


@dataclass
class ShardCaption:
    key: str
    shard: str
    field: str
    caption: str


@dataclass
class ShardScoreReport:
    out: Path
    histogram: Path | None
    samples: int
    rows: int
    summary: dict  # field -> score key -> summary
    skipped: dict = field(default_factory=dict)  # reason -> count (from the shard reader)


def _as_dict(value) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, (bytes, bytearray, str)):
        try:
            data = json.loads(value)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def _as_text(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return None


def captions_from_sample(sample: dict) -> list[ShardCaption]:
    key, shard = str(sample.get("__key__", "")), str(sample.get("__shard__", ""))
    found = []
    txt = _as_text(sample.get("txt"))
    if txt is not None:
        found.append(ShardCaption(key, shard, "txt", txt))
    meta = _as_dict(sample.get("json"))
    for name in ORIGINAL_FIELDS:
        if isinstance(meta.get(name), str):
            found.append(ShardCaption(key, shard, name, meta[name]))
            break
    return found


def collect_captions(shard_dir: str | Path, stats=None) -> tuple[int, list[ShardCaption]]:
    """(samples read, captions) from every shard in shard_dir, via the shared shard reader."""
    from dftrain.shards import iter_samples

    samples, captions = 0, []
    for sample in iter_samples(shard_dir, rank=0, world_size=1, decode=False, require=("txt",), stats=stats):
        samples += 1
        captions.extend(captions_from_sample(sample))
    return samples, captions


def score_shards(
    shard_dir: str | Path,
    score_fn: Callable[[Sequence[str]], list[dict]],
    score_keys: Sequence[str],
    *,
    out: str | Path | None = None,
    histogram: str | Path | None = None,
) -> ShardScoreReport:
    from dftrain.shards import SkipStats
    from dftrain.shards.inputs import shard_set

    inputs = shard_set(shard_dir)  # folders without a manifest, bad list lines: one-line ShardError
    if out is None and inputs.single_folder is None:
        raise DftrainError("several shard inputs: pass --out FILE.jsonl for the scores")
    shard_dir = inputs.folders[0]
    stats = SkipStats()
    samples, captions = collect_captions(inputs, stats)
    scored = score_fn([item.caption for item in captions])
    rows = [
        {"key": item.key, "shard": item.shard, "field": item.field, **row}
        for item, row in zip(captions, scored, strict=True)
    ]
    out_path = write_jsonl(Path(out) if out else shard_dir / "scores.jsonl", rows)
    fields = list(dict.fromkeys(row["field"] for row in rows))
    summary = {name: summarize_rows([r for r in rows if r["field"] == name], score_keys) for name in fields}
    hist_path = Path(histogram) if histogram else out_path.with_name(out_path.stem + "_generality.png")
    groups = {name: [r.get("generality") for r in rows if r["field"] == name] for name in fields}
    plot_histogram(groups, hist_path, title=f"caption generality: {inputs.describe()}")
    skipped = dict(stats.skipped) if stats is not None else {}
    return ShardScoreReport(out_path, hist_path, samples, len(rows), summary, skipped)
