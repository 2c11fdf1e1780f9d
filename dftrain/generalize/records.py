"""Records: what an output sample is made from, and the one writer of an output shard.

A record is the outcome for one distinct normalized caption: the fallback chain's result (caption,
step, reason, rounds, faithfulness verdict) and the generality scores before and after. Both dedup
modes (stage.py per shard, passes.py over the caption table) make records and end in
`write_generalized_shard`, so their output shards are the same bytes.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from dftrain.generalize.table import normalize_caption

log = logging.getLogger("dftrain.generalize")


def read_shard(tar: Path, strict: bool):
    from dftrain.shards import SkipStats, iter_samples

    stats = SkipStats()
    samples = list(iter_samples([tar], rank=0, world_size=1, decode=False, strict=strict, stats=stats))
    return samples, stats


def _output_sample(sample: dict, record: dict, llm: dict, faithful: bool = False) -> dict:
    out = {k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")}
    meta = dict(out.get("json") or {})
    meta.update({
        "orig_caption": sample["txt"],
        "generalized_caption": record["caption"],
        "llm": llm,
        "fallback": record["reason"],
        "fallback_step": record["step"],
        "generality_before": record["before"],
        "generality_after": record["after"],
    })
    if record["rounds"]:
        meta["generality_rounds"] = record["rounds"]
    if faithful:
        meta["faithful"], meta["faithful_noun"] = record["faithful"], record["faithful_noun"]
    out["json"] = meta
    out["txt"] = record["caption"]
    return out


SCORE_CHUNK = 256  # captions per scorer call: another thread waiting for the NLP lock waits at most this long


def score_records(texts: list[str], results: list, scorer=None) -> list[dict]:
    """One record per distinct normalized caption (`texts`) from its fallback-chain result, with the
    generality scores before and after (what an output sample's txt and json are made from)."""
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    if scorer is not None and texts:
        outs = list(dict.fromkeys(r.caption for r in results if r.caption is not None))
        for values, scores in ((texts, before), (outs, after)):
            for start in range(0, len(values), SCORE_CHUNK):
                chunk = values[start:start + SCORE_CHUNK]
                scores.update(zip(chunk, (s["generality"] for s in scorer.score_many(chunk)), strict=True))
    return [{"caption": r.caption, "step": r.step, "reason": r.reason, "rounds": r.rounds, "faithful": r.faithful,
             "faithful_noun": r.faithful_noun, "before": before.get(t), "after": after.get(r.caption)}
            for t, r in zip(texts, results, strict=True)]


def write_generalized_shard(tar: Path, out_path: Path, samples: list[dict], stats, records: dict[str, dict], *,
                            llm: dict, faithful: bool, started: float) -> dict:
    """Write `out_path` (atomic) from the samples and the records of their captions (normalized text ->
    record); returns the receipt body (without settings). Both dedup modes end here."""
    from dftrain.shards import write_shard

    texts = [normalize_caption(s["txt"]) for s in samples]
    mine = {t: records[t] for t in dict.fromkeys(texts)}
    steps: Counter = Counter()
    dropped: list[str] = []
    written: list[dict] = []
    for sample, text in zip(samples, texts, strict=True):
        record = mine[text]
        steps[record["step"]] += 1
        if record["caption"] is None:
            dropped.append(sample["__key__"])
            continue
        written.append(_output_sample(sample, record, llm, faithful=faithful))
    for key in dropped[:20]:
        log.warning("%s: sample %s dropped (LLM output rejected, --fallback ends in drop)", tar.name, key)
    info = write_shard(out_path, written)

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 4) if values else None

    return {
        "name": info.name, "samples": info.samples, "sha256": info.sha256, "bytes": info.bytes,
        "input": {"name": tar.name, "samples_read": len(samples)},
        "unique_captions": len(mine),
        "steps": dict(steps),
        "fallback_reasons": dict(Counter(r["reason"] for r in mine.values() if r["reason"])),
        "faithful": ({str(k).lower(): v for k, v in Counter(r["faithful"] for r in mine.values()
                                                            if r["caption"] is not None).items()}
                     if faithful else None),
        "skipped": dict(stats.skipped),
        "skipped_keys": [list(p) for p in stats.problems[:1000]],
        "dropped_keys": dropped[:1000],
        "generality_before_mean": mean(mine[t]["before"] for t in texts),
        "generality_after_mean": mean(mine[t]["after"] for t in texts),
        "seconds": round(time.perf_counter() - started, 3),
    }
