"""`dftrain evaluate`: how much a set of generations copies the training set, and its fit and diversity.

    dftrain evaluate --generations GEN --train-shards DIR --out OUT [--descriptor embedded]

Every generation is matched to its most similar training image (descriptor cosine,
retrieval.py); training images are matched to their most similar other training image
for the background. Outputs: OUT/matches.jsonl, OUT/report.json, OUT/report.md and two PNGs.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dftrain.errors import DftrainError
from dftrain.evaluate import metrics
from dftrain.evaluate.cache import EmbeddedSet, cache_stem, embed_set
from dftrain.evaluate.descriptors import EmbeddedDescriptor, get_descriptor
from dftrain.evaluate.groups import train_groups
from dftrain.evaluate.inputs import (
    decode_image,
    iter_generation_bytes,
    iter_train_bytes,
    load_generations,
    read_train_images,
)
from dftrain.evaluate.report import (
    GRID_PNG,
    HISTOGRAM_PNG,
    copy_grid,
    report_markdown,
    similarity_histogram,
    write_json_atomic,
    write_jsonl_atomic,
)
from dftrain.evaluate.retrieval import IVFParams, nearest

log = logging.getLogger("dftrain.evaluate")

NO_INCEPTION = ("no Inception weights available locally (pass --inception PATH to a TorchScript file such as "
                "pt_inception-2015-12-05, or set DFTRAIN_INCEPTION); FID not computed")


@dataclass
class EvaluateOptions:
    descriptor: str = "embedded"
    weights: str | Path | None = None
    threshold: float | None = None  # None: the descriptor's documented copy threshold
    inception: str | Path | None = None
    search: str = "exact"  # exact | ivf
    ivf: IVFParams | None = None
    bg_sample: int = 10_000  # training images used as background queries (all when fewer)
    cache_dir: Path | None = None  # None: $DFTRAIN_CACHE/descriptors; see use_cache
    use_cache: bool = True
    grid_size: int = 8
    seed: int = 0
    sscd_norm: str = "paper"
    device: str | None = None
    overwrite: bool = False  # write into a folder dftrain did not make (dftrain/outputs.py)


def _stem(options: EvaluateOptions, kind: str, source: Path, cache_id: str) -> Path | None:
    if not options.use_cache:
        return None
    if options.cache_dir is None:
        from dftrain.paths import cache_dir

        root = cache_dir("descriptors")
    else:
        root = Path(options.cache_dir)
    return cache_stem(root, kind, source, cache_id)


@contextmanager
def _progress(description: str, total: int | None):
    """The progress display (dftrain/progress.py), fed by a callback taking the number of images done."""
    from dftrain.progress import progress

    with progress(f"evaluate ({description})", total, unit="images") as shown:
        yield shown.advance


def _train_total(train_dir: Path) -> int | None:
    try:
        from dftrain.shards import Manifest

        return Manifest.load(train_dir).total_samples
    except Exception:  # noqa: BLE001 - only for the progress bar
        return None


def _embed_both(extractor, gen_dir: Path, gens, train_dir: Path, options: EvaluateOptions,
                train_stats=None) -> tuple[EmbeddedSet, EmbeddedSet]:
    with _progress(f"{extractor.name}: training images", _train_total(train_dir)) as advance:
        train = embed_set(extractor, iter_train_bytes(train_dir, stats=train_stats),
                          _stem(options, "train", train_dir, extractor.cache_id), progress=advance)
    if not train.keys:
        raise DftrainError(f"no usable training images in {train_dir}")
    with _progress(f"{extractor.name}: generations", len(gens)) as advance:
        gen = embed_set(extractor, iter_generation_bytes(gen_dir, gens),
                        _stem(options, "gen", gen_dir, extractor.cache_id), progress=advance)
    if not gen.keys:
        raise DftrainError(f"no decodable generated images in {gen_dir}")
    log.info("%s: train %d (reused %d, computed %d), generations %d (reused %d, computed %d)",
             extractor.cache_id, len(train.keys), train.reused, train.computed, len(gen.keys), gen.reused,
             gen.computed)
    return train, gen


def background_similarities(train: np.ndarray, options: EvaluateOptions) -> tuple[np.ndarray, np.ndarray]:
    """Each (sampled) training image vs every OTHER training row; returns (query rows, sims)."""
    n = len(train)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if n <= options.bg_sample:
        rows = np.arange(n)
    else:
        rows = np.sort(np.random.default_rng(options.seed).choice(n, size=options.bg_sample, replace=False))
    result = nearest(train[rows], train, method=options.search, exclude_ids=rows, ivf=options.ivf)
    return rows, result.sims[:, 0]


def _fid(gen_dir, gens, train_dir, options) -> tuple[float | None, str | None]:
    path = options.inception or os.environ.get("DFTRAIN_INCEPTION")
    if not path:
        return None, NO_INCEPTION
    from dftrain.evaluate.fid import InceptionFeatures, frechet_between

    extractor = InceptionFeatures(path, device=options.device)
    train, gen = _embed_both(extractor, gen_dir, gens, train_dir, options)
    if len(gen.keys) < 2 or len(train.keys) < 2:
        return None, "FID needs at least two images in each set"
    return frechet_between(gen.descriptors, train.descriptors), None


def evaluate(gen_dir: str | Path, train_dir: str | Path, out_dir: str | Path,
             options: EvaluateOptions | None = None) -> dict:
    from dftrain.outputs import check_output_folder, claim_output
    from dftrain.shards import SkipStats

    options = options or EvaluateOptions()
    gen_dir, train_dir, out_dir = Path(gen_dir), Path(train_dir), Path(out_dir)
    check_output_folder(out_dir, "evaluate", overwrite=options.overwrite)  # before any descriptor runs
    gens = load_generations(gen_dir)
    descriptor = get_descriptor(options.descriptor, options.weights, sscd_norm=options.sscd_norm,
                                device=options.device)
    threshold = descriptor.threshold if options.threshold is None else float(options.threshold)

    stats = SkipStats()
    train, gen = _embed_both(descriptor, gen_dir, gens, train_dir, options, train_stats=stats)
    by_file = {g.file: g for g in gens}
    kept = [by_file[f] for f in gen.keys]

    match = nearest(gen.descriptors, train.descriptors, method=options.search, ivf=options.ivf)
    best_sims, best_rows = match.sims[:, 0], match.ids[:, 0]
    best_keys = [train.keys[i] for i in best_rows]
    _, bg_sims = background_similarities(train.descriptors, options)

    summary = metrics.similarity_summary(best_sims, threshold)
    bg = metrics.similarity_summary(bg_sims, threshold, prefix="bg_sim") if len(bg_sims) else {}
    own_keys = [g.train_key for g in kept]
    own = metrics.own_match_rate(best_keys, own_keys)
    groups = train_groups(train_dir)
    own_group = metrics.own_group_match(best_keys, own_keys, groups)
    div, div_groups = metrics.diversity(gen.descriptors, [g.prompt for g in kept])

    if isinstance(descriptor, EmbeddedDescriptor):
        emb_train, emb_gen = train, gen
    else:
        emb_train, emb_gen = _embed_both(EmbeddedDescriptor(), gen_dir, gens, train_dir, options)
    from dftrain.evaluate.fid import frechet_between

    fd_embedded = (frechet_between(emb_gen.descriptors, emb_train.descriptors)
                   if len(emb_gen.keys) >= 2 and len(emb_train.keys) >= 2 else None)
    # The same fit figure in the copy descriptor's own feature space (e.g. SSCD's 512-d).
    fd_descriptor = (fd_embedded if emb_gen is gen else frechet_between(gen.descriptors, train.descriptors)
                     if len(gen.keys) >= 2 and len(train.keys) >= 2 else None)
    fid, fid_reason = _fid(gen_dir, gens, train_dir, options)

    report = {
        "generations_dir": str(gen_dir),
        "train_dir": str(train_dir),
        "n_generations": len(gen.keys),
        "n_train": len(train.keys),
        "descriptor": descriptor.name,
        "descriptor_id": descriptor.cache_id,
        "descriptor_dim": descriptor.dim,
        "search": options.search,
        "threshold": threshold,
        "sim_mean": summary["sim_mean"],
        "sim_std": summary["sim_std"],
        "sim_p75": summary["sim_p75"],
        "sim_p90": summary["sim_p90"],
        "sim_p95": summary["sim_p95"],
        # The paper's fixed 0.5 line (meant for SSCD), and the descriptor's own copy threshold
        # (0.7 for the embedded descriptor, whose unrelated pairs often exceed 0.5).
        "frac_above_0_5": metrics.fraction_above(best_sims, 0.5),
        "frac_above_threshold": summary["sim_frac_above"],
        "bg_n": len(bg_sims),
        "bg_sim_mean": bg.get("bg_sim_mean"),
        "bg_sim_std": bg.get("bg_sim_std"),
        "bg_sim_p95": bg.get("bg_sim_p95"),
        "bg_frac_above": bg.get("bg_sim_frac_above"),
        "own_match_rate": own,
        # Duplicate-aware: the nearest training image is a copy of the prompt's image (groups.py).
        "own_group_match_rate": own_group["rate"],
        "own_group_chance": own_group["chance"],
        # The figures for generations prompted by duplicated vs unique training images.
        "split": metrics.duplicate_split(best_sims, best_keys, own_keys, groups, threshold),
        "diversity": div,
        "diversity_prompts": div_groups,
        "fd_embedded": fd_embedded,
        "fd_descriptor": fd_descriptor,
        "fid": fid,
    }
    if fid is None:
        report["fid_reason"] = fid_reason
    skipped = {"generations": [k for k, _ in gen.skipped], "train": [k for k, _ in train.skipped],
               "train_shards": dict(stats.skipped)}
    if any(skipped.values()):
        report["skipped"] = skipped
    report["cache"] = {"train_reused": train.reused, "train_computed": train.computed,
                       "gen_reused": gen.reused, "gen_computed": gen.computed}

    with claim_output(out_dir, "evaluate", overwrite=options.overwrite):
        _write_outputs(out_dir, report, kept, best_keys, best_sims, bg_sims, threshold, descriptor, gen_dir,
                       train_dir, options)
    return report


def _write_outputs(out_dir, report, kept, best_keys, best_sims, bg_sims, threshold, descriptor, gen_dir, train_dir,
                   options) -> None:
    matches = [
        {"file": g.file, "best_key": k, "best_sim": float(s),
         "own": None if g.train_key is None else k == g.train_key, "train_key": g.train_key, "prompt": g.prompt}
        for g, k, s in zip(kept, best_keys, best_sims, strict=True)
    ]
    write_jsonl_atomic(out_dir / "matches.jsonl", matches)
    write_json_atomic(out_dir / "report.json", report)
    similarity_histogram(out_dir / HISTOGRAM_PNG, best_sims, bg_sims, threshold, descriptor.name)
    top = sorted(matches, key=lambda m: -m["best_sim"])[: options.grid_size]
    train_imgs = read_train_images(train_dir, {m["best_key"] for m in top})
    copy_grid(out_dir / GRID_PNG, [
        (decode_image((gen_dir / m["file"]).read_bytes()), train_imgs.get(m["best_key"]),
         f"sim {m['best_sim']:.3f}  train {m['best_key']}") for m in top])
    (out_dir / "report.md").write_text(report_markdown(report, top), encoding="utf-8")
