"""The options of `dftrain generalize`, defined once (dftrain/options.py): the command line is generated
from this model, and an experiment file's `generalize` section is checked against it.

Cross-field checks (required folders, the fallback chain, engine arguments) are in `validate`, before any
model loads.
"""

from __future__ import annotations

from typing import Literal

from dftrain.errors import ConfigError
from dftrain.options import (
    Integer,
    Number,
    Options,
    PathList,
    Switch,
    build_options,
    missing_required,
    option,
)
from dftrain.progress import DEFAULT_LOG_INTERVAL, LOG_INTERVAL_HELP
from dftrain.shards.inputs import SHARDS_HELP

BACKENDS = ("embedded", "transformers", "vllm")
DTYPES = ("float32", "bfloat16", "float16", "auto")
SCORE_MODES = ("auto", "on", "off")
DEDUP_MODES = ("global", "shard")
DEDUP_PASSES = ("all", "collect", "generalize", "write")
ENGINES = ("local", "ray")
DEFAULT_BATCH_SIZE = 32  # transformers / embedded; vLLM gets a whole part at once (it schedules itself)


class GeneralizeOptions(Options):
    # inputs / outputs
    shards: PathList = option([], "Input shards: " + SHARDS_HELP, default_text="required", metavar="DIR|TAR|LIST")
    out: str = option("", "Output shard folder (same shard names and keys).", default_text="required")
    # model
    backend: Literal[BACKENDS] = option("embedded", "LLM backend; embedded is SmolLM2-135M on the CPU, vllm needs a GPU.")
    model: str | None = option(None, "Local model folder or .gguf file (vllm: a folder).",
                               default_text="the embedded model")
    dtype: Literal[DTYPES] = option("float32", "transformers/embedded: float32 (batch-invariant) or bfloat16; "
                                    "vllm: float32 means auto.")
    device: str | None = option(None, "transformers/embedded: cpu, cuda or auto.", default_text="cpu")
    tensor_parallel_size: Integer = option(1, "vllm: GPUs per model replica.", ge=1)
    engine_arg: list[str] = option([], "vllm: KEY=VALUE passed to vllm.LLM (repeatable; VALUE read as JSON when "
                                   "it is JSON), e.g. gpu_memory_utilization=0.85 max_model_len=1024.")
    batch_size: Integer | None = option(None, "Unique captions per LLM call.",
                                        default_text=f"{DEFAULT_BATCH_SIZE}; vllm: all unique captions of a part "
                                        "in one call (vLLM schedules them itself)", ge=1)
    # the method
    max_words: Integer = option(4, "At most this many words per caption (paper: fewer than 5).", ge=1)
    fallback: str = option("retry,rule,original", "Steps after a rejected LLM output, in order: retry (stricter "
                           "prompt), rule (rule-based generalizer), original or drop.")
    prompt_template: str | None = option(None, "Chat prompt with {caption}.",
                                         default_text="transformers/vllm: the paper's prompt")
    few_shot: str | None = option(None, "File of `specific => general` lines for a raw completion prompt.",
                                  default_text="embedded: the packaged list")
    target_generality: Number | None = option(None, "Re-ask for captions whose generality score stays below "
                                              "this (needs the score module).", ge=0.0, le=10.0)
    rounds: Integer = option(2, "At most this many re-asks with --target-generality.", ge=0)
    max_input_chars: Integer = option(512, "Captions are cut to this for the prompt (orig_caption keeps the full "
                                      "text).", ge=1)
    score: Literal[SCORE_MODES] = option("auto", "Generality scores before/after in the json.")
    faithful: Switch = option(True, "Accept an answer only if it keeps a head noun of the caption (or a WordNet "
                              "synonym / non-abstract hypernym).")
    # scale
    dedup: Literal[DEDUP_MODES] = option("global", "global: each distinct caption of the whole input is "
                                         "generalized once (passes collect, generalize, write); shard: within "
                                         "each shard only.")
    dedup_pass: Literal[DEDUP_PASSES] = option("all", "With --dedup global: the pass to run. Several ranks run "
                                               "collect, generalize and write as separate steps, in this order.")
    dedup_parts: Integer = option(64, "With --dedup global: the caption table is cut into this many parts (the "
                                  "unit of LLM work, of the rank split and of resume; memory is bounded by one).",
                                  ge=1, le=65536)
    engine: Literal[ENGINES] = option("local", "With --dedup global: run the generalize pass here, or on Ray "
                                      "Data (one model per worker, parts handed to whichever is free; the `ray` "
                                      "extra).")
    ray_workers: Integer | None = option(None, "--engine ray: model workers (actors).", default_text="2", ge=1)
    rank: Integer | None = option(None, "This process's rank.", default_text="RANK or SLURM_PROCID, else 0", ge=0)
    world_size: Integer | None = option(None, "Number of ranks.", default_text="WORLD_SIZE or SLURM_NTASKS, else 1",
                                        ge=1)
    strict: Switch = option(False, "Fail on the first bad sample instead of skipping and counting it.")
    overwrite: Switch = option(False, "Redo this rank's work even when finished.")
    finalize: Switch = option(False, "Only write OUT/manifest.json from the finished shards (after all ranks ran).",
                              flags=("--finalize",))
    progress: Switch = option(True, "Progress on rank 0: a bar on a terminal, else a line every --log-interval.")
    log_interval: Number = option(DEFAULT_LOG_INTERVAL, LOG_INTERVAL_HELP, gt=0.0)


def build_generalize_options(given: dict) -> GeneralizeOptions:
    """Defaults < the flags the user typed; types, ranges and choices checked against the flags."""
    return build_options(GeneralizeOptions, [("flags", given)])


def validate(opts: GeneralizeOptions) -> None:
    """What the field types cannot check, in one ConfigError, before anything loads."""
    from dftrain.generalize.engine_args import parse_engine_args
    from dftrain.generalize.generalizer import parse_fallback

    problems = missing_required(opts)
    if opts.finalize:
        if problems:
            raise ConfigError("; ".join(problems))
        return
    for check in (lambda: parse_fallback(opts.fallback), lambda: parse_engine_args(opts.engine_arg)):
        try:
            check()
        except ConfigError as exc:
            problems.append(str(exc))
    if opts.engine_arg and opts.backend != "vllm":
        problems.append(f"--engine-arg is for --backend vllm (got --backend {opts.backend})")
    if problems:
        raise ConfigError("; ".join(problems))
