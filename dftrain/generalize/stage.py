"""The shard stage: generalize every caption of a shard folder into a new shard folder.

One output shard per input shard, same name and sample keys; `jpg` (and every other
field) copied byte for byte, `txt` replaced by the generalized caption, `json` extended
with orig_caption, generalized_caption, llm, fallback, fallback_step, (when the
score module is available) generality_before / generality_after and (with the faithfulness
check, on by default) faithful / faithful_noun.

Captions are deduplicated by their normalized text, within each shard (`--dedup shard`, here) or
across the whole input (`--dedup global`, the default: passes.py); both write the same shards.

Resume and several ranks (nodes):
- rank r of w takes input shards i with i % w == r (and with --dedup global the table parts p % w == r);
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
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dftrain.distributed import split_for_rank
from dftrain.errors import ConfigError, DftrainError
from dftrain.generalize.generalizer import Generalizer
from dftrain.generalize.options import DEFAULT_BATCH_SIZE
from dftrain.generalize.overlap import Background, Locked
from dftrain.generalize.receipts import (
    RECEIPT_DIR,
    finalize,
    input_shards,
    input_tar,
    model_identity,
    receipt_path,
    shard_is_done,
    work_key,
    write_receipt,
)
from dftrain.generalize.records import read_shard, score_records, write_generalized_shard
from dftrain.generalize.table import normalize_caption
from dftrain.progress import progress as show_progress

log = logging.getLogger("dftrain.generalize")

__all__ = ["RECEIPT_DIR", "StageReport", "StageSettings", "finalize", "generalize_shards",
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
                "rounds": self.rounds, "limits": self.limits, "faithful": self.faithful,
                "faithful_rules": faithful_rules_version() if self.faithful else None, "engine": self.engine}


def faithful_rules_version() -> int:
    from dftrain.generalize.faithful import RULES_VERSION

    return RULES_VERSION


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
    passes: dict = field(default_factory=dict)  # --dedup global: what each pass run here did
    dedup: dict | None = None  # --dedup global: samples, distinct captions and the ratio of the whole table

    @property
    def captions_per_second(self) -> float:
        return self.samples_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "assigned": self.assigned,
                "written": self.written, "skipped_done": self.skipped_done, "samples_in": self.samples_in,
                "samples_out": self.samples_out, "unique_captions": self.unique_captions,
                "seconds": round(self.seconds, 3), "captions_per_second": round(self.captions_per_second, 3),
                "steps": dict(self.steps), "skipped": dict(self.skipped),
                "manifest_written": self.manifest_written, "passes": self.passes, "dedup": self.dedup}


# --------------------------------------------------------------------------- one shard


# --------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class DedupPlan:
    """How captions are deduplicated: "shard" (within each shard) or "global" (the caption table,
    passes.py), which pass(es) to run and into how many parts the table is cut."""

    mode: str = "shard"
    run: str = "all"
    parts: int = 64

    def passes(self) -> tuple[str, ...]:
        from dftrain.generalize.passes import PASSES

        return PASSES if self.run == "all" else (self.run,)


def run_stage(in_dir: str | Path, out_dir: str | Path, *, settings: StageSettings,
              make_generalizer: Callable[[], Generalizer], model_id: str, scorer=None, rank: int = 0,
              world_size: int = 1, strict: bool = False, overwrite: bool = False, command: str = "",
              progress: bool = True, dedup: DedupPlan = DedupPlan(), overlap: bool = True,
              ray: dict | None = None) -> StageReport:
    """Generalize this rank's shards of `in_dir` into `out_dir`; see the module docstring.

    `model_id` is the model's identity (receipts.model_identity). `make_generalizer` is called
    only when some shard (or part of the caption table) needs work, so a rank whose work is all
    done never loads a model.
    """
    from dftrain.generalize.passes import my_parts, temp_patterns
    from dftrain.outputs import claim_output
    from dftrain.shards.inputs import shard_set

    out_dir = Path(out_dir)
    in_dir = shard_set(in_dir)  # folders, tars, list files: dftrain.shards.inputs
    if any(folder.resolve() == out_dir.resolve() for folder in in_dir.folders):
        raise ConfigError("--out must differ from --shards (output shards keep the input names)")
    if dedup.mode == "global" and dedup.run == "all" and world_size > 1:
        raise ConfigError(f"--dedup global with {world_size} ranks: run the passes as separate steps, each on "
                          "every rank after the previous one finished: --dedup-pass collect, then generalize, then "
                          "write (launchers/generalize_slurm.sh does), or use --dedup shard")
    shards = input_shards(in_dir)
    mine = split_for_rank(shards, rank, world_size)
    parts = my_parts(dedup.parts, rank, world_size) if dedup.mode == "global" else []
    temp_files = [f"{s.name}.tmp" for s in mine] + [f"{RECEIPT_DIR}/.{s.name}.json.*.tmp" for s in mine]
    temp_files += temp_patterns(mine, parts) if dedup.mode == "global" else []
    with claim_output(out_dir, "generalize", overwrite=overwrite, scope=f"rank{rank}", temp_patterns=temp_files):
        run = _Run(in_dir, out_dir, shards, mine, settings=settings, make_generalizer=make_generalizer,
                   model_id=model_id, scorer=scorer, rank=rank, world_size=world_size, strict=strict,
                   command=command, progress=progress, dedup=dedup, overlap=overlap, ray=ray)
        return run.run(overwrite=overwrite, parts=parts)


class _Run:
    """One rank's call of run_stage inside its claim of the output folder."""

    def __init__(self, in_dir, out_dir: Path, shards: list, mine: list, *, settings: StageSettings,
                 make_generalizer: Callable[[], Generalizer], model_id: str, scorer, rank: int, world_size: int,
                 strict: bool, command: str, progress: bool, dedup: DedupPlan, overlap: bool = True,
                 ray: dict | None = None):
        self.in_dir, self.out_dir, self.shards, self.mine = in_dir, out_dir, shards, mine
        self.settings, self.make_generalizer, self.model_id, self.scorer = settings, make_generalizer, model_id, scorer
        self.rank, self.world_size, self.strict, self.command, self.progress = rank, world_size, strict, command, progress
        self.dedup = dedup
        self.overlap = overlap
        self.ray = ray  # {"workers", "options"}: the generalize pass on Ray Data (ray_runner.py)
        self.report = StageReport(rank, world_size, assigned=[s.name for s in mine])
        self.keys = {s.name: work_key(input_sha256=s.sha256, model=model_id, settings=settings.to_dict())
                     for s in mine}
        self._generalizer: Generalizer | None = None

    def generalizer(self) -> Generalizer:
        if self._generalizer is None:
            self._generalizer = self.make_generalizer()
        return self._generalizer

    def llm(self) -> dict:
        backend = self.generalizer().backend
        return {"backend": backend.name, "model": backend.model_id, "prompt_hash": self.settings.prompt_hash}

    def run(self, *, overwrite: bool, parts: list[int]) -> StageReport:
        passes = self.dedup.passes() if self.dedup.mode == "global" else ("write",)
        if overwrite:
            self.forget(passes, parts)
        todo = []
        for s in self.mine:
            if shard_is_done(self.out_dir, s.name, self.keys[s.name]):
                self.report.skipped_done.append(s.name)
            else:
                todo.append(s)
        if self.report.skipped_done and "write" in passes:
            log.info("rank %d: %d shard(s) already generalized, skipped", self.rank, len(self.report.skipped_done))
        if todo and "write" in passes:
            # A manifest from an earlier run no longer describes the folder once a shard is redone.
            (self.out_dir / "manifest.json").unlink(missing_ok=True)
        started = time.perf_counter()
        if self.dedup.mode == "shard":
            self.per_shard(todo)
        else:
            self.global_passes(passes, parts, todo)
        self.report.seconds = time.perf_counter() - started
        if "write" in passes:
            self.write_manifest(changed=bool(todo))
        return self.report

    def forget(self, passes: tuple[str, ...], parts: list[int]) -> None:
        """--overwrite: this rank's receipts of the passes it runs are removed, so their work is redone."""
        from dftrain.generalize.table import part_name, parts_dir, runs_dir

        for s in self.mine:
            if "write" in passes:
                receipt_path(self.out_dir, s.name).unlink(missing_ok=True)
            if "collect" in passes:
                (runs_dir(self.out_dir) / f"{s.name}.json").unlink(missing_ok=True)
        if "generalize" in passes:
            for p in parts:
                (parts_dir(self.out_dir) / f"{part_name(p)}.json").unlink(missing_ok=True)

    def shard_done(self, name: str, receipt: dict) -> None:
        receipt.update({"settings": self.settings.to_dict(), "key": self.keys[name], "rank": self.rank,
                        "world_size": self.world_size})
        write_receipt(self.out_dir, name, receipt)
        report = self.report
        report.written.append(name)
        report.samples_in += receipt["input"]["samples_read"] + sum(receipt["skipped"].values())
        report.samples_out += receipt["samples"]
        report.unique_captions += receipt["unique_captions"]
        report.steps.update(receipt["steps"])
        report.skipped.update(receipt["skipped"])
        log.info("rank %d: %s done: %d samples, %d unique captions, steps %s, skipped %s", self.rank, name,
                 receipt["samples"], receipt["unique_captions"], receipt["steps"], receipt["skipped"] or "none")

    def per_shard(self, todo: list) -> None:
        """--dedup shard: the LLM works on shard i + 1 while shard i is scored and written (overlap.py)."""
        if not todo:
            return
        generalizer, llm = self.generalizer(), self.llm()
        with (show_progress("generalize", sum(s.samples for s in todo), unit="captions",
                            enabled=self.progress and self.rank == 0) as bar,
              Background(self.overlap) as background):
            advance = bar.advance
            for s in todo:
                started = time.perf_counter()
                samples, stats = read_shard(input_tar(self.in_dir, s.name), self.strict)
                texts = [normalize_caption(sample["txt"]) for sample in samples]
                unique = list(dict.fromkeys(texts))  # in-shard dedup, first-seen order
                weight = Counter(texts)

                def on_batch(indices: list[int], unique=unique, weight=weight) -> None:
                    advance(sum(weight[unique[i]] for i in indices))

                results = generalizer.generalize(unique, on_batch=on_batch) if unique else []
                background.submit(self.finish_shard, s.name, samples, stats, unique, results, llm, started, advance)

    def finish_shard(self, name: str, samples: list, stats, unique: list[str], results: list, llm: dict,
                     started: float, advance: Callable[[int], None]) -> None:
        records = dict(zip(unique, score_records(unique, results, self.scorer), strict=True))
        receipt = write_generalized_shard(input_tar(self.in_dir, name), self.out_dir / name, samples, stats, records, llm=llm,
                                          faithful=self.settings.faithful, started=started)
        self.shard_done(name, receipt)
        advance(stats.total_skipped)

    def global_passes(self, passes: tuple[str, ...], parts: list[int], todo: list) -> None:
        from dftrain.generalize import passes as table_passes

        common = {"parts": self.dedup.parts, "limits": self.settings.limits}
        settings = self.settings.to_dict()
        if "collect" in passes:
            self.report.passes["collect"] = table_passes.collect_pass(
                self.in_dir, self.out_dir, self.mine, strict=self.strict, rank=self.rank, **common)
        if "generalize" in passes and self.ray is not None:
            from dftrain.generalize.ray_runner import generalize_pass_ray

            self.report.passes["generalize"] = generalize_pass_ray(
                self.out_dir, self.shards, parts, model_id=self.model_id, settings=settings,
                options=self.ray["options"], workers=self.ray["workers"], **common)
        elif "generalize" in passes:
            def generalize(texts: list[str], on_batch) -> list:
                return self.generalizer().generalize(texts, on_batch=on_batch) if texts else []

            self.report.passes["generalize"] = table_passes.generalize_pass(
                self.out_dir, self.shards, parts, model_id=self.model_id, settings=settings, generalize=generalize,
                score=lambda texts, results: score_records(texts, results, self.scorer), llm=self.llm,
                progress=self.progress, rank=self.rank, overlap=self.overlap, **common)
        if "write" in passes:
            table_passes.check_parts(self.out_dir, self.shards, model_id=self.model_id, settings=settings, **common)
            recorded = table_passes.table_llm(self.out_dir, self.dedup.parts)
            table_passes.write_pass(self.in_dir, self.out_dir, todo, parts=self.dedup.parts,
                                    llm=lambda: recorded or self.llm(),
                                    faithful=self.settings.faithful, strict=self.strict, on_shard=self.shard_done,
                                    progress=self.progress, rank=self.rank)
            self.report.dedup = table_passes.table_summary(self.out_dir, self.dedup.parts)

    def write_manifest(self, *, changed: bool) -> None:
        in_dir, out_dir, report = self.in_dir, self.out_dir, self.report
        manifest = out_dir / "manifest.json"
        if not changed and manifest.is_file() and finalize(in_dir, out_dir, require_all=False, write=False):
            report.manifest_written = True  # nothing changed here or elsewhere: keep the manifest as it is
        else:
            # report.dedup: the caption table's summary, read by the write pass (--dedup global; else None)
            report.manifest_written = finalize(in_dir, out_dir, command=self.command, require_all=False,
                                               dedup=report.dedup)
            if not report.manifest_written:
                manifest.unlink(missing_ok=True)  # it described shards that are now stale


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


@dataclass
class PreparedStage:
    """What the options decide before any shard is read: the settings, the model's identity, the scorer
    and how to build the generalizer (called only when there is LLM work)."""

    settings: StageSettings
    model_id: str
    scorer: Any
    make_generalizer: Callable[[], Generalizer]


def prepare_stage(*, backend: str = "embedded", model: str | None = None, backend_options: dict | None = None,
                  batch_size: int | None = None, max_words: int = 4, fallback: str = "retry,rule,original",
                  prompt_template: str | None = None, few_shot: str | Path | None = None,
                  target_generality: float | None = None, rounds: int = 2, max_input_chars: int = 512,
                  score: str = "auto", backend_instance=None, faithful: bool = True,
                  spacy_model: str | None = None) -> PreparedStage:
    """Check the options and load what every process of the stage needs (a Ray worker calls it too)."""
    from dftrain.generalize.generalizer import parse_fallback
    from dftrain.generalize.prompts import make_prompt_spec
    from dftrain.llm.backends import BACKEND_NAMES, load_backend
    from dftrain.llm.embedded import find_embedded_gguf
    from dftrain.shards.limits import current_limits

    if backend_instance is None and backend not in BACKEND_NAMES:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if max_words < 1:
        raise ConfigError("--max-words must be >= 1")
    if rounds < 0:
        raise ConfigError("--rounds must be >= 0")
    chain = parse_fallback(fallback)
    spec = make_prompt_spec(backend, prompt_template=prompt_template, few_shot=few_shot, max_words=max_words)
    # spaCy and WordNet are shared by the checker and the scorer, and used from two threads (overlap.py).
    nlp_lock = threading.Lock()
    scorer = load_optional_scorer("on" if target_generality is not None else score)
    scorer = Locked(scorer, nlp_lock) if scorer is not None else None
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

        checker = Locked(load_checker(spacy_model), nlp_lock)

    def make_generalizer() -> Generalizer:
        engine = backend_instance or load_backend(backend, model, **(backend_options or {}))
        return Generalizer(engine, spec, fallback=chain, batch_size=default_batch_size(backend, batch_size),
                           max_input_chars=max_input_chars,
                           scorer=scorer, target_generality=target_generality, rounds=rounds, faithful=checker)

    return PreparedStage(settings, model_id, scorer, make_generalizer)


def generalize_shards(in_dir: str | Path, out_dir: str | Path, *, rank: int | None = None,
                      world_size: int | None = None, strict: bool = False, overwrite: bool = False,
                      command: str = "", progress: bool = True, dedup: str = "global", dedup_pass: str = "all",
                      dedup_parts: int = 64, overlap: bool = True, engine: str = "local",
                      ray_workers: int | None = None, **options) -> StageReport:
    """The whole stage from plain options (what `dftrain generalize` calls); `options` are those of
    prepare_stage (backend, model, batch_size, ...).

    `backend_instance` replaces loading a backend by name (tests, embedding in other code); `overlap=False`
    scores and writes in the LLM's thread (for comparisons). `engine="ray"` runs the generalize pass of
    --dedup global on Ray Data (ray_runner.py), one model per worker.
    """
    from dftrain.distributed import rank_info

    try:
        info = rank_info(rank, world_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if engine == "ray":
        from dftrain.generalize.ray_runner import check_ray

        check_ray(dedup=dedup, world_size=info.world_size, backend_instance=options.get("backend_instance"))
    prepared = prepare_stage(**options)
    ray = {"workers": ray_workers, "options": options} if engine == "ray" else None
    return run_stage(in_dir, out_dir, settings=prepared.settings, make_generalizer=prepared.make_generalizer,
                     model_id=prepared.model_id, scorer=prepared.scorer, rank=info.rank, world_size=info.world_size,
                     strict=strict, overwrite=overwrite, command=command, progress=progress,
                     dedup=DedupPlan(dedup, dedup_pass, dedup_parts), overlap=overlap, ray=ray)


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
        progress=opts.progress, faithful=opts.faithful, dedup=opts.dedup, dedup_pass=opts.dedup_pass,
        dedup_parts=opts.dedup_parts, engine=opts.engine, ray_workers=opts.ray_workers)
