"""The shard stage: generalize every caption of a shard folder into a new shard folder.

One output shard per input shard, same name and sample keys; `jpg` (and every other
field) copied byte for byte, `txt` replaced by the generalized caption, `json` extended
with orig_caption, generalized_caption, llm, fallback, fallback_step, (when the
score module is available) generality_before / generality_after and (with the faithfulness
check, on by default) faithful / faithful_noun.

Resume and several ranks (nodes):
- rank r of w takes input shards i with i % w == r;
- each output shard is written atomically (temp file + rename), then a receipt
  `OUT/.generalize/<shard>.json` (atomic as well) records its sha256, size, sample
  count, the settings and per-shard statistics;
- on a re-run, a shard whose receipt matches the tar on disk (size and sha256) and
  whose work key (the input shard's sha256 from the input manifest, the model's
  identity, the settings: receipts.py) is unchanged is skipped; any change redoes
  exactly the shards it affects; a tar without a receipt (killed between the two
  renames) is redone;
- the output folder is claimed per rank (dftrain/outputs.py): a folder dftrain did not
  make is refused unless --overwrite, a second process of the same rank is refused, and
  the temp files a dead run of this rank left are removed;
- the manifest is written by whichever rank finds every input shard's receipt present
  when it finishes (the last one to finish, in practice), or by `--finalize`. Several
  ranks writing it at once write the same content through atomic renames.

Bad input follows the shard reader's policy (counted skip with the key logged, or an
error with --strict): non-UTF-8, empty, and over-10,000-byte captions, unsafe keys, members
or images over the shard limits, undecodable JSON, damaged tars. Captions the reader accepts but that are long are cut to
`max_input_chars` (at a word boundary) for the prompt only; orig_caption keeps the full text.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dftrain.errors import ConfigError, DftrainError
from dftrain.generalize.generalizer import Generalizer
from dftrain.generalize.options import DEFAULT_BATCH_SIZE
from dftrain.generalize.progress import progress_bar
from dftrain.generalize.receipts import (
    RECEIPT_DIR,
    finalize,
    input_shards,
    model_identity,
    receipt_path,
    shard_is_done,
    work_key,
    write_receipt,
)

log = logging.getLogger("dftrain.generalize")

__all__ = ["RECEIPT_DIR", "StageReport", "StageSettings", "finalize", "generalize_shard", "generalize_shards",
           "run_stage"]


@dataclass(frozen=True)
class StageSettings:
    """What decides the output: a finished shard is reused only under the same settings."""

    backend: str
    model: str
    prompt_hash: str
    fallback: tuple[str, ...]
    max_words: int
    max_input_chars: int
    target_generality: float | None = None
    rounds: int = 0
    limits: dict[str, int] | None = None  # the shard limits decide which samples are read
    faithful: bool = False
    engine: dict[str, Any] | None = None  # dtype and the engine arguments that change the text

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "prompt_hash": self.prompt_hash,
                "fallback": list(self.fallback), "max_words": self.max_words,
                "max_input_chars": self.max_input_chars, "target_generality": self.target_generality,
                "rounds": self.rounds, "limits": self.limits, "faithful": self.faithful, "engine": self.engine}


@dataclass
class StageReport:
    """What one call of run_stage did on this rank."""

    rank: int
    world_size: int
    assigned: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    samples_in: int = 0
    samples_out: int = 0
    unique_captions: int = 0
    seconds: float = 0.0
    steps: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    manifest_written: bool = False

    @property
    def captions_per_second(self) -> float:
        return self.samples_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "assigned": self.assigned,
                "written": self.written, "skipped_done": self.skipped_done, "samples_in": self.samples_in,
                "samples_out": self.samples_out, "unique_captions": self.unique_captions,
                "seconds": round(self.seconds, 3), "captions_per_second": round(self.captions_per_second, 3),
                "steps": dict(self.steps), "skipped": dict(self.skipped),
                "manifest_written": self.manifest_written}


# --------------------------------------------------------------------------- one shard


def _read_shard(tar: Path, strict: bool):
    from dftrain.shards import SkipStats, iter_samples

    stats = SkipStats()
    samples = list(iter_samples([tar], rank=0, world_size=1, decode=False, strict=strict, stats=stats))
    return samples, stats


def _output_sample(sample: dict, result, llm: dict, before: float | None, after: float | None,
                   faithful: bool = False) -> dict:
    out = {k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")}
    meta = dict(out.get("json") or {})
    meta.update({
        "orig_caption": sample["txt"],
        "generalized_caption": result.caption,
        "llm": llm,
        "fallback": result.reason,
        "fallback_step": result.step,
        "generality_before": before,
        "generality_after": after,
    })
    if result.rounds:
        meta["generality_rounds"] = result.rounds
    if faithful:
        meta["faithful"], meta["faithful_noun"] = result.faithful, result.faithful_noun
    out["json"] = meta
    out["txt"] = result.caption
    return out


def generalize_shard(tar: Path, out_path: Path, generalizer: Generalizer, *, llm: dict, scorer=None,
                     strict: bool = False, on_samples: Callable[[int], None] | None = None) -> dict:
    """Generalize one input tar into `out_path` (atomic); returns the receipt body (without settings)."""
    from dftrain.shards import write_shard

    started = time.perf_counter()
    samples, stats = _read_shard(tar, strict)
    captions = [s["txt"] for s in samples]
    unique = list(dict.fromkeys(captions))  # in-shard dedup, first-seen order
    weight = Counter(captions)

    def progress(indices: list[int]) -> None:
        if on_samples:
            on_samples(sum(weight[unique[i]] for i in indices))

    results = dict(zip(unique, generalizer.generalize(unique, on_batch=progress), strict=True))
    before = after = {}
    if scorer is not None:
        before = dict(zip(unique, (s["generality"] for s in scorer.score_many(unique)), strict=True))
        outs = list(dict.fromkeys(r.caption for r in results.values() if r.caption is not None))
        after = dict(zip(outs, (s["generality"] for s in scorer.score_many(outs)), strict=True))

    steps: Counter = Counter()
    dropped: list[str] = []
    written: list[dict] = []
    for sample in samples:
        result = results[sample["txt"]]
        steps[result.step] += 1
        if result.caption is None:
            dropped.append(sample["__key__"])
            continue
        written.append(_output_sample(sample, result, llm, before.get(sample["txt"]), after.get(result.caption),
                                      faithful=generalizer.faithful is not None))
    for key in dropped[:20]:
        log.warning("%s: sample %s dropped (LLM output rejected, --fallback ends in drop)", tar.name, key)
    if on_samples and stats.total_skipped:
        on_samples(stats.total_skipped)
    info = write_shard(out_path, written)

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 4) if values else None

    return {
        "name": info.name, "samples": info.samples, "sha256": info.sha256, "bytes": info.bytes,
        "input": {"name": tar.name, "samples_read": len(samples)},
        "unique_captions": len(unique),
        "steps": dict(steps),
        "fallback_reasons": dict(Counter(r.reason for r in results.values() if r.reason)),
        "faithful": ({str(k).lower(): v for k, v in Counter(r.faithful for r in results.values()
                                                            if r.caption is not None).items()}
                     if generalizer.faithful is not None else None),
        "skipped": dict(stats.skipped),
        "skipped_keys": [list(p) for p in stats.problems[:1000]],
        "dropped_keys": dropped[:1000],
        "generality_before_mean": mean(before.get(c) for c in captions) if before else None,
        "generality_after_mean": mean(after.get(results[c].caption) for c in captions) if after else None,
        "seconds": round(time.perf_counter() - started, 3),
    }


# --------------------------------------------------------------------------- the stage


def run_stage(in_dir: str | Path, out_dir: str | Path, *, settings: StageSettings,
              make_generalizer: Callable[[], Generalizer], model_id: str, scorer=None, rank: int = 0,
              world_size: int = 1, strict: bool = False, overwrite: bool = False, command: str = "",
              progress: bool = True) -> StageReport:
    """Generalize this rank's shards of `in_dir` into `out_dir`; see the module docstring.

    `model_id` is the model's identity (receipts.model_identity). `make_generalizer` is called
    only when some shard needs work, so a rank whose shards are all done never loads a model.
    """
    from dftrain.outputs import claim_output

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if in_dir.resolve() == out_dir.resolve():
        raise ConfigError("--out must differ from --shards (output shards keep the input names)")
    shards = input_shards(in_dir)
    mine = [s for i, s in enumerate(shards) if i % world_size == rank]
    temp_files = [f"{s.name}.tmp" for s in mine] + [f"{RECEIPT_DIR}/.{s.name}.json.*.tmp" for s in mine]
    with claim_output(out_dir, "generalize", overwrite=overwrite, scope=f"rank{rank}", temp_patterns=temp_files):
        return _run_claimed(in_dir, out_dir, mine, settings=settings, make_generalizer=make_generalizer,
                            model_id=model_id, scorer=scorer, rank=rank, world_size=world_size, strict=strict,
                            overwrite=overwrite, command=command, progress=progress)


def _run_claimed(in_dir: Path, out_dir: Path, mine: list, *, settings: StageSettings,
                 make_generalizer: Callable[[], Generalizer], model_id: str, scorer, rank: int, world_size: int,
                 strict: bool, overwrite: bool, command: str, progress: bool) -> StageReport:
    report = StageReport(rank, world_size, assigned=[s.name for s in mine])
    if overwrite:
        for s in mine:
            receipt_path(out_dir, s.name).unlink(missing_ok=True)
    keys = {s.name: work_key(input_sha256=s.sha256, model=model_id, settings=settings.to_dict()) for s in mine}
    todo = []
    for s in mine:
        if shard_is_done(out_dir, s.name, keys[s.name]):
            report.skipped_done.append(s.name)
        else:
            todo.append(s)
    if report.skipped_done:
        log.info("rank %d: %d shard(s) already generalized, skipped", rank, len(report.skipped_done))

    started = time.perf_counter()
    if todo:
        # A manifest from an earlier run no longer describes the folder once a shard is redone.
        (out_dir / "manifest.json").unlink(missing_ok=True)
        generalizer = make_generalizer()
        llm = {"backend": generalizer.backend.name, "model": generalizer.backend.model_id,
               "prompt_hash": settings.prompt_hash}
        with progress_bar(progress and rank == 0, sum(s.samples for s in todo)) as advance:
            for s in todo:
                receipt = generalize_shard(in_dir / s.name, out_dir / s.name, generalizer, llm=llm, scorer=scorer,
                                           strict=strict, on_samples=advance)
                receipt.update({"settings": settings.to_dict(), "key": keys[s.name], "rank": rank,
                                "world_size": world_size})
                write_receipt(out_dir, s.name, receipt)
                report.written.append(s.name)
                report.samples_in += receipt["input"]["samples_read"] + sum(receipt["skipped"].values())
                report.samples_out += receipt["samples"]
                report.unique_captions += receipt["unique_captions"]
                report.steps.update(receipt["steps"])
                report.skipped.update(receipt["skipped"])
                log.info("rank %d: %s done: %d samples, %d unique captions, steps %s, skipped %s", rank,
                         s.name, receipt["samples"], receipt["unique_captions"], receipt["steps"],
                         receipt["skipped"] or "none")
    report.seconds = time.perf_counter() - started
    manifest = out_dir / "manifest.json"
    if not todo and manifest.is_file() and finalize(in_dir, out_dir, require_all=False, write=False):
        report.manifest_written = True  # nothing changed here or elsewhere: keep the manifest as it is
    else:
        report.manifest_written = finalize(in_dir, out_dir, command=command, require_all=False)
        if not report.manifest_written:
            manifest.unlink(missing_ok=True)  # it described shards that are now stale
    return report


# --------------------------------------------------------------------------- one call


def load_optional_scorer(mode: str = "auto"):
    """The generality scorer: "auto" (None with a logged note when unavailable), "on" (required), "off"."""
    if mode == "off":
        return None
    try:
        from dftrain.score import load_scorer

        return load_scorer()
    except (ImportError, DftrainError) as exc:
        if mode == "on":
            raise
        log.warning("generality scores skipped: the score module is unavailable (%s)", exc)
        return None
    except Exception as exc:  # an optional module that is broken must not stop generalization
        if mode == "on":
            raise
        log.warning("generality scores skipped: the score module failed to load (%s: %s)",
                    type(exc).__name__, exc)
        return None


def generalize_shards(in_dir: str | Path, out_dir: str | Path, *, backend: str = "embedded",
                      model: str | None = None, backend_options: dict | None = None, batch_size: int | None = None,
                      max_words: int = 4, fallback: str = "retry,rule,original", prompt_template: str | None = None,
                      few_shot: str | Path | None = None, target_generality: float | None = None, rounds: int = 2,
                      max_input_chars: int = 512, score: str = "auto", rank: int | None = None,
                      world_size: int | None = None, strict: bool = False, overwrite: bool = False,
                      command: str = "", progress: bool = True, backend_instance=None,
                      faithful: bool = True, spacy_model: str | None = None) -> StageReport:
    """The whole stage from plain options (what `dftrain generalize` calls).

    `backend_instance` replaces loading a backend by name (tests, embedding in other code).
    """
    from dftrain.distributed import rank_info
    from dftrain.generalize.backends import BACKEND_NAMES, load_backend
    from dftrain.generalize.embedded import find_embedded_gguf
    from dftrain.generalize.generalizer import parse_fallback
    from dftrain.generalize.prompts import make_prompt_spec
    from dftrain.shards.limits import current_limits

    if backend_instance is None and backend not in BACKEND_NAMES:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if max_words < 1:
        raise ConfigError("--max-words must be >= 1")
    if rounds < 0:
        raise ConfigError("--rounds must be >= 0")
    chain = parse_fallback(fallback)
    spec = make_prompt_spec(backend, prompt_template=prompt_template, few_shot=few_shot, max_words=max_words)
    try:
        info = rank_info(rank, world_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    scorer = load_optional_scorer("on" if target_generality is not None else score)
    settings = StageSettings(backend=backend, model=str(model) if model else "default", prompt_hash=spec.hash(),
                             fallback=chain, max_words=max_words, max_input_chars=max_input_chars,
                             target_generality=target_generality, rounds=rounds if target_generality else 0,
                             limits=current_limits().to_dict(), faithful=faithful,
                             engine=engine_settings(backend_options or {}))
    if backend_instance is not None:
        model_id = model_identity(stand_in=f"{backend_instance.name}:{backend_instance.model_id}")
    else:
        # The weights are hashed without loading them (the default transformers/vllm model is the
        # embedded one, converted from its GGUF file).
        model_id = model_identity(Path(model) if model else find_embedded_gguf())
    checker = None
    if faithful:  # before any model loads: a missing spaCy model or WordNet is a one-line error
        from dftrain.generalize.faithful import load_checker

        checker = load_checker(spacy_model)

    def make_generalizer() -> Generalizer:
        engine = backend_instance or load_backend(backend, model, **(backend_options or {}))
        return Generalizer(engine, spec, fallback=chain, batch_size=default_batch_size(backend, batch_size),
                           max_input_chars=max_input_chars,
                           scorer=scorer, target_generality=target_generality, rounds=rounds, faithful=checker)

    return run_stage(in_dir, out_dir, settings=settings, make_generalizer=make_generalizer, model_id=model_id,
                     scorer=scorer, rank=info.rank, world_size=info.world_size, strict=strict, overwrite=overwrite,
                     command=command, progress=progress)


def default_batch_size(backend: str, batch_size: int | None) -> int | None:
    """vLLM schedules continuously: give it every unique caption of a part at once (None); the others
    decode in batches of DEFAULT_BATCH_SIZE."""
    if batch_size is not None:
        return batch_size
    return None if backend == "vllm" else DEFAULT_BATCH_SIZE


def engine_settings(options: dict) -> dict:
    """The part of the backend's options that changes what is generated (for the work key)."""
    from dftrain.generalize.engine_args import output_affecting

    rest = {k: v for k, v in options.items() if k not in ("dtype", "device", "tensor_parallel_size", "threads",
                                                          "require_gpu")}
    return {"dtype": str(options.get("dtype", "float32")), **output_affecting(rest)}


def backend_options(opts) -> dict:
    """The keyword options of load_backend from GeneralizeOptions."""
    if opts.backend == "vllm":
        from dftrain.generalize.engine_args import parse_engine_args

        return {"tensor_parallel_size": opts.tensor_parallel_size,
                "dtype": "auto" if opts.dtype == "float32" else opts.dtype, **parse_engine_args(opts.engine_arg)}
    return {"dtype": opts.dtype, "device": opts.device or "cpu"}


def run_from_options(opts, *, command: str = "") -> StageReport:
    """`dftrain generalize` with checked GeneralizeOptions (dftrain/generalize/options.py)."""
    return generalize_shards(
        opts.shards, opts.out, backend=opts.backend, model=opts.model, backend_options=backend_options(opts),
        batch_size=opts.batch_size, max_words=opts.max_words, fallback=opts.fallback,
        prompt_template=opts.prompt_template, few_shot=opts.few_shot, target_generality=opts.target_generality,
        rounds=opts.rounds, max_input_chars=opts.max_input_chars, score=opts.score, rank=opts.rank,
        world_size=opts.world_size, strict=opts.strict, overwrite=opts.overwrite, command=command,
        progress=opts.progress, faithful=opts.faithful)
