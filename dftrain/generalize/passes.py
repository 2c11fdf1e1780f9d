"""`--dedup global`: each distinct caption of the whole input folder is generalized once, in three passes.

1. collect (split by shard): each input shard's distinct normalized captions with their counts, sorted by
   key, into OUT/.generalize/table/runs/ (table.py). Reused while the input shard's sha256, the shard
   limits and the number of parts are unchanged.
2. generalize (split by part: rank r of w takes the parts p with p % w == r): part p of the caption table
   is merged from range p of every run, and its captions go through the fallback chain (and the
   generality scorer) into parts/part-p.sqlite. Reused while its captions (their keys), the model and the
   settings are unchanged; when only some captions changed, the results of the others are kept and only
   the new ones are asked.
3. write (split by shard): each output shard is written from its input shard and the table, exactly as
   `--dedup shard` writes it (stage.write_generalized_shard), with the same receipts and work keys.

Every file is written to a temporary name and renamed, with its receipt after it, so a killed pass is
simply run again. With one rank, `--dedup-pass all` runs the three in order; several ranks run each pass
as its own step (every rank finishes pass k before any starts pass k + 1: launchers/generalize_slurm.sh).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from dftrain.distributed import split_for_rank
from dftrain.errors import DftrainError
from dftrain.generalize.overlap import Background
from dftrain.generalize.receipts import input_tar, read_json_receipt, write_json_receipt
from dftrain.generalize.table import (
    ResultsReader,
    caption_key,
    encode_run,
    merge_part,
    normalize_caption,
    part_name,
    parts_dir,
    read_all_results,
    read_run_part,
    runs_dir,
    table_digest,
    write_results,
)
from dftrain.progress import progress as show_progress

log = logging.getLogger("dftrain.generalize")

PASSES = ("collect", "generalize", "write")
# Parts with fewer captions to ask than this are asked together (small inputs, or few changed captions):
# the fallback chain's batches stay full. Memory stays bounded by this many captions beyond one part.
GROUP_CAPTIONS = 512


class TableIncomplete(DftrainError):
    """A pass needs the output of an earlier pass that some rank has not finished."""


def my_parts(parts: int, rank: int, world_size: int) -> list[int]:
    return split_for_rank(list(range(parts)), rank, world_size)


def temp_patterns(shards: list, parts: list[int]) -> list[str]:
    """The temporary files this rank's passes can leave behind (removed when the rank starts again)."""
    runs = runs_dir(Path("."))
    table = parts_dir(Path("."))
    out = [f"{runs}/.{s.name}.*.tmp" for s in shards]
    return out + [f"{table}/.{part_name(p)}.*.tmp" for p in parts]


# --------------------------------------------------------------------------- pass 1: collect


def run_key(shard, *, parts: int, limits: dict | None) -> dict:
    return {"input_sha256": shard.sha256, "limits": limits, "parts": parts}


def _file_matches(path: Path, receipt: dict, *, verify_sha: bool) -> bool:
    from dftrain.shards import sha256_file

    if not path.is_file() or path.stat().st_size != receipt.get("bytes"):
        return False
    return not verify_sha or sha256_file(path) == receipt.get("sha256")


def run_receipt(out_dir: Path, shard, key: dict, *, verify_sha: bool = False) -> dict | None:
    """The receipt of a finished, current run of `shard`, else None."""
    folder = runs_dir(out_dir)
    receipt = read_json_receipt(folder / f"{shard.name}.json")
    if receipt is None or receipt.get("key") != key:
        return None
    return receipt if _file_matches(folder / f"{shard.name}.jsonl", receipt, verify_sha=verify_sha) else None


def collect_pass(in_dir: Path, out_dir: Path, mine: list, *, parts: int, limits: dict | None, strict: bool,
                 rank: int) -> dict:
    """Pass 1 for this rank's input shards; returns {"written": [...], "skipped_done": [...]}."""
    from dftrain.files import atomic_write_bytes
    from dftrain.generalize.records import read_shard
    from dftrain.shards import sha256_file

    folder = runs_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    report = {"written": [], "skipped_done": []}
    for shard in mine:
        key = run_key(shard, parts=parts, limits=limits)
        if run_receipt(out_dir, shard, key, verify_sha=True) is not None:
            report["skipped_done"].append(shard.name)
            continue
        samples, _ = read_shard(input_tar(in_dir, shard.name), strict)
        data, offsets, part_samples = encode_run((s["txt"] for s in samples), parts)
        path = folder / f"{shard.name}.jsonl"
        atomic_write_bytes(path, data)
        write_json_receipt(folder / f"{shard.name}.json", {
            "key": key, "sha256": sha256_file(path), "bytes": len(data), "offsets": offsets,
            "part_samples": part_samples, "samples": len(samples), "unique_captions": data.count(b"\n")})
        report["written"].append(shard.name)
    log.info("rank %d: collect: %d run(s) written, %d already there", rank, len(report["written"]),
             len(report["skipped_done"]))
    return report


def all_runs(out_dir: Path, shards: list, *, parts: int, limits: dict | None) -> dict[str, dict]:
    """name -> run receipt of every input shard; TableIncomplete naming what is missing."""
    receipts = {s.name: run_receipt(out_dir, s, run_key(s, parts=parts, limits=limits)) for s in shards}
    missing = [name for name, r in receipts.items() if r is None]
    if missing:
        raise TableIncomplete(f"the collect pass has not finished {len(missing)} of {len(shards)} input shard(s) "
                              f"(first: {missing[:3]}); run --dedup-pass collect on every rank first")
    return receipts


def runs_digest(runs: dict[str, dict]) -> str:
    """Which runs the table was merged from (the state of the whole input)."""
    digest = hashlib.sha256()
    for name in sorted(runs):
        digest.update(f"{name}:{runs[name]['sha256']}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- pass 2: generalize


def part_key(table: dict, *, model_id: str, settings: dict) -> dict:
    return {"table": table_digest(table), "model": model_id, "settings": settings}


def part_receipt(out_dir: Path, part: int) -> dict | None:
    return read_json_receipt(parts_dir(out_dir) / f"{part_name(part)}.json")


def _reusable_results(out_dir: Path, part: int, receipt: dict | None, key: dict) -> dict[str, dict]:
    """Results of an earlier version of this part made with the same model and settings."""
    if receipt is None:
        return {}
    made = receipt.get("key") or {}
    path = parts_dir(out_dir) / f"{part_name(part)}.sqlite"
    if (made.get("model"), made.get("settings")) != (key["model"], key["settings"]) or not _file_matches(
            path, receipt, verify_sha=True):
        return {}
    return read_all_results(path)


class _PartJob:
    """One part that needs LLM work: which captions to ask, and (in the background) its scoring and files."""

    def __init__(self, out_dir: Path, part: int, table: dict, key: dict, runs: str, receipt: dict | None):
        self.out_dir, self.part, self.table, self.key, self.runs = out_dir, part, table, key, runs
        self.started = time.perf_counter()
        self.known = _reusable_results(out_dir, part, receipt, key)
        self.previous_llm = (receipt or {}).get("llm")
        self.todo = [k for k in table if k not in self.known]
        self.texts = [table[k][0] for k in self.todo]
        self.advanced = 0

    def finish(self, results: list, score: Callable[[list[str], list], list[dict]], llm: Callable[[], dict],
               advance: Callable[[int], None], written: list[str]) -> None:
        from dftrain.shards import sha256_file

        fresh = dict(zip(self.todo, score(self.texts, results), strict=True))
        rows = [(k, text, count, self.known.get(k) or fresh[k]) for k, (text, count) in self.table.items()]
        name = part_name(self.part)
        path = parts_dir(self.out_dir) / f"{name}.sqlite"
        write_results(path, rows)
        write_json_receipt(parts_dir(self.out_dir) / f"{name}.json", {
            "key": self.key, "runs": self.runs, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "unique_captions": len(self.table), "samples": _count(self.table), "asked": len(self.todo),
            "reused": len(self.table) - len(self.todo), "steps": dict(Counter(r[3]["step"] for r in rows)),
            "llm": llm() if self.todo else self.previous_llm,
            "seconds": round(time.perf_counter() - self.started, 3)})
        written.append(name)
        advance(_count(self.table) - self.advanced)


def load_part(out_dir: Path, part: int, runs: dict[str, dict], *, model_id: str, settings: dict
              ) -> tuple[dict, dict, dict | None]:
    """Part `part` of the table merged from every run, its work key and its receipt (None if none)."""
    folder = runs_dir(out_dir)
    table = merge_part(read_run_part(folder / f"{name}.jsonl", r["offsets"], part) for name, r in runs.items())
    return table, part_key(table, model_id=model_id, settings=settings), part_receipt(out_dir, part)


def generalize_one_part(out_dir: Path, part: int, runs: dict[str, dict], digest: str, *, model_id: str,
                        settings: dict, generalize: Callable, score: Callable, llm: Callable[[], dict]) -> dict:
    """The whole work of one part in this thread (what each Ray worker does per part); returns counts."""
    table, key, receipt = load_part(out_dir, part, runs, model_id=model_id, settings=settings)
    counts = {"part": part, "unique_captions": len(table), "samples": _count(table), "asked": 0, "written": 0}
    if _part_is_done(out_dir, part, receipt, key, digest):
        return counts
    job = _PartJob(out_dir, part, table, key, digest, receipt)
    results = generalize(job.texts, None) if job.todo else []
    job.finish(results, score, llm, lambda n: None, [])
    return {**counts, "asked": len(job.todo), "written": 1}


def _ask_group(group: list[_PartJob], generalize: Callable, background: Background, score: Callable,
               llm: Callable[[], dict], advance: Callable[[int], None], written: list[str]) -> None:
    """One fallback-chain call over the captions of several parts; their scoring and files follow in the
    background, as one job (so the next group's LLM work does not wait for them)."""
    owners = [(job, i) for job in group for i in range(len(job.todo))]

    def on_batch(indices: list[int]) -> None:
        n = 0
        for index in indices:
            job, i = owners[index]
            weight = job.table[job.todo[i]][1]
            job.advanced += weight
            n += weight
        advance(n)

    results = generalize([t for job in group for t in job.texts], on_batch)
    slices, start = [], 0
    for job in group:
        slices.append((job, results[start:start + len(job.todo)]))
        start += len(job.todo)

    def finish_all() -> None:
        for job, part_results in slices:
            job.finish(part_results, score, llm, advance, written)

    background.submit(finish_all)


def _part_is_done(out_dir: Path, part: int, receipt: dict | None, key: dict, runs: str) -> bool:
    """The part's file matches its receipt, made from the same captions, model and settings; a receipt
    that names other runs (the same captions from a changed input) is brought up to date."""
    folder = parts_dir(out_dir)
    name = part_name(part)
    if receipt is None or receipt.get("key") != key or not _file_matches(folder / f"{name}.sqlite", receipt,
                                                                         verify_sha=True):
        return False
    if receipt.get("runs") != runs:
        write_json_receipt(folder / f"{name}.json", {**receipt, "runs": runs})
    return True


def generalize_pass(out_dir: Path, shards: list, parts_todo: list[int], *, parts: int, limits: dict | None,
                    model_id: str, settings: dict, generalize: Callable[[list[str], Callable], list],
                    score: Callable[[list[str], list], list[dict]], llm: Callable[[], dict], progress: bool,
                    rank: int, overlap: bool = True) -> dict:
    """Pass 2 for this rank's parts. `generalize(texts, on_batch)` runs the fallback chain (loading the
    model on its first call), here; `score(texts, results)` makes the records and the part's files are
    written in the background (overlap.py) while the next part is generalized. `llm()` is what the output
    json records as the model. Returns counts for the report."""
    runs = all_runs(out_dir, shards, parts=parts, limits=limits)
    digest = runs_digest(runs)
    parts_dir(out_dir).mkdir(parents=True, exist_ok=True)
    report = {"written": [], "skipped_done": [], "asked": 0, "reused": 0, "unique_captions": 0, "samples": 0}
    total = sum(r["part_samples"][p] for r in runs.values() for p in parts_todo)
    # The bar counts samples whose caption is in these parts.
    group: list[_PartJob] = []  # small parts asked together: fuller batches, the same answers
    with (show_progress("generalize", total, unit="captions", enabled=progress and rank == 0) as bar,
          Background(overlap) as background):
        advance = bar.advance
        for part in parts_todo:
            table, key, receipt = load_part(out_dir, part, runs, model_id=model_id, settings=settings)
            report["unique_captions"] += len(table)
            report["samples"] += _count(table)
            if _part_is_done(out_dir, part, receipt, key, digest):
                report["skipped_done"].append(part_name(part))
                advance(_count(table))
                continue
            job = _PartJob(out_dir, part, table, key, digest, receipt)
            report["asked"] += len(job.todo)
            report["reused"] += len(table) - len(job.todo)
            if not job.todo:  # nothing to ask or score: written here, without waiting for the background job
                job.finish([], score, llm, advance, report["written"])
                continue
            group.append(job)
            if sum(len(j.todo) for j in group) >= GROUP_CAPTIONS:
                _ask_group(group, generalize, background, score, llm, advance, report["written"])
                group = []
        if group:
            _ask_group(group, generalize, background, score, llm, advance, report["written"])
    log.info("rank %d: generalize: %d part(s) written (%d captions asked, %d kept from earlier), %d already there",
             rank, len(report["written"]), report["asked"], report["reused"], len(report["skipped_done"]))
    return report


def _count(table: dict) -> int:
    return sum(count for _, count in table.values())


def check_parts(out_dir: Path, shards: list, *, parts: int, limits: dict | None, model_id: str,
                settings: dict) -> None:
    """Every part of the table is finished for the current input, model and settings."""
    digest = runs_digest(all_runs(out_dir, shards, parts=parts, limits=limits))
    missing = []
    for part in range(parts):
        receipt = part_receipt(out_dir, part)
        key = (receipt or {}).get("key") or {}
        ok = (receipt is not None and receipt.get("runs") == digest and key.get("model") == model_id
              and key.get("settings") == settings
              and _file_matches(parts_dir(out_dir) / f"{part_name(part)}.sqlite", receipt, verify_sha=False))
        if not ok:
            missing.append(part_name(part))
    if missing:
        raise TableIncomplete(f"the generalize pass has not finished {len(missing)} of {parts} part(s) of the "
                              f"caption table for this input, model and settings (first: {missing[:3]}); run "
                              "--dedup-pass generalize on every rank first")


def table_llm(out_dir: Path, parts: int) -> dict | None:
    """The `llm` field of the output json, as recorded by the pass that generalized the table."""
    for part in range(parts):
        found = (part_receipt(out_dir, part) or {}).get("llm")
        if found:
            return found
    return None


def table_summary(out_dir: Path, parts: int) -> dict | None:
    """Samples, distinct captions and the dedup ratio of the whole table (from the part receipts)."""
    receipts = [part_receipt(out_dir, p) for p in range(parts)]
    if any(r is None for r in receipts):
        return None
    samples = sum(r["samples"] for r in receipts)
    unique = sum(r["unique_captions"] for r in receipts)
    return {"parts": parts, "samples": samples, "unique_captions": unique,
            "dedup_ratio": round(samples / unique, 4) if unique else None}


# --------------------------------------------------------------------------- pass 3: write


def write_pass(in_dir: Path, out_dir: Path, todo: list, *, parts: int, llm: Callable[[], dict], faithful: bool,
               strict: bool, on_shard: Callable[[str, dict], None], progress: bool, rank: int) -> None:
    """Pass 3 for this rank's shards whose output is not finished (`todo`); `on_shard(name, receipt)` after
    each. `llm()` gives the json's `llm` field (asked only when a shard has samples)."""
    from dftrain.generalize.records import read_shard, write_generalized_shard

    reader = ResultsReader(parts_dir(out_dir), parts)
    try:
        with show_progress("generalize", sum(s.samples for s in todo), unit="captions",
                           enabled=progress and rank == 0) as bar:
            advance = bar.advance
            for shard in todo:
                started = time.perf_counter()
                samples, stats = read_shard(input_tar(in_dir, shard.name), strict)
                texts = list(dict.fromkeys(normalize_caption(s["txt"]) for s in samples))
                found = reader.lookup(caption_key(t) for t in texts)
                records = {t: found.get(caption_key(t)) for t in texts}
                lost = [t for t, r in records.items() if r is None]
                if lost:
                    raise TableIncomplete(f"{shard.name}: {len(lost)} caption(s) are not in the caption table "
                                          f"(first: {lost[0][:80]!r}); run the collect pass again for this input")
                receipt = write_generalized_shard(input_tar(in_dir, shard.name), out_dir / shard.name, samples, stats, records,
                                                  llm=llm() if samples else {}, faithful=faithful, started=started)
                on_shard(shard.name, receipt)
                advance(len(samples) + stats.total_skipped)
    finally:
        reader.close()
