"""`dftrain evaluate`: how much a set of generations copies the training set, and its fit and diversity.

    dftrain evaluate --generations GEN --train-shards DIR --out OUT [--descriptor embedded]
    # many nodes: each rank embeds its shards, then one call (rank 0, or any world size 1 call) merges
    srun dftrain evaluate ... --cache-dir SHARED      (or --rank R --world-size W)
    dftrain evaluate ... --cache-dir SHARED

Training descriptors are computed per shard and kept on disk (store.py: float16 .npy per shard,
keyed by the shard's sha256 and the descriptor's identity), then read memory-mapped: every
generation is matched to its most similar training image, and a seeded sample of --reference-n
training images to their most similar other training image (the background), in one streamed
pass (retrieval.py). FID and the Frechet fit figures use the same sample. Outputs:
OUT/matches.jsonl, OUT/report.json, OUT/report.md and two PNGs.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dftrain.errors import ConfigError, DftrainError
from dftrain.evaluate import metrics
from dftrain.evaluate.cache import cache_stem, embed_set
from dftrain.evaluate.descriptors import EmbeddedDescriptor, get_descriptor
from dftrain.evaluate.inputs import (
    decode_image,
    iter_generation_bytes,
    load_generations,
    read_train_images,
)
from dftrain.evaluate.options import EvaluateOptions
from dftrain.evaluate.report import (
    GRID_PNG,
    HISTOGRAM_PNG,
    copy_grid,
    report_markdown,
    similarity_histogram,
    write_json_atomic,
    write_jsonl_atomic,
)
from dftrain.evaluate.retrieval import nearest_streamed, random_rows
from dftrain.evaluate.store import (
    Plan,
    TrainSet,
    compute_missing,
    missing_shards,
    reference_positions,
    text_hash,
)

log = logging.getLogger("dftrain.evaluate")

NO_INCEPTION = ("no Inception weights available locally (pass --inception PATH to a TorchScript file such as "
                "pt_inception-2015-12-05, or set DFTRAIN_INCEPTION); FID not computed")
NO_FD_EMBEDDED = "the embedded descriptor was not computed (pass --fd-embedded to compute it on the reference sample)"
STORE_FOLDER = "shards"  # under the cache folder: the per-shard training descriptors


def _cache_root(options: EvaluateOptions) -> Path:
    if options.cache_dir is None:
        from dftrain.paths import cache_dir

        return cache_dir("descriptors")
    return Path(options.cache_dir)


def _stem(options: EvaluateOptions, kind: str, source: Path, cache_id: str) -> Path | None:
    if not options.use_cache:
        return None
    return cache_stem(_cache_root(options), kind, source, cache_id)


@contextmanager
def _store_root(options: EvaluateOptions):
    """Where the per-shard training descriptors go: the cache, or a temporary folder with --no-cache."""
    if options.use_cache:
        yield _cache_root(options) / STORE_FOLDER
        return
    with tempfile.TemporaryDirectory(prefix="dftrain-descriptors-") as tmp:
        yield Path(tmp)


@contextmanager
def _progress(description: str, total: int | None):
    """The progress display (dftrain/progress.py), fed by a callback taking the number of images done."""
    from dftrain.progress import progress

    with progress(f"evaluate ({description})", total, unit="images") as shown:
        yield shown.advance


def _rank(options: EvaluateOptions):
    from dftrain.distributed import rank_info

    try:
        info = rank_info(options.rank, options.world_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if info.world_size > 1 and not options.use_cache:
        raise ConfigError("--no-cache works in one process only: ranks hand their descriptors to the merge "
                          "through the cache folder (pass --cache-dir on a shared filesystem)")
    return info


def _train_manifest(train_dir):
    """The training set as a ShardSet (folders, tars or list files; dftrain.shards.inputs)."""
    from dftrain.shards.inputs import expand_inputs, shard_set

    for path, _ in expand_inputs(train_dir):
        if not path.exists():
            raise DftrainError(f"training shards folder {path} does not exist")
    chosen = shard_set(train_dir)
    if not chosen.members:
        raise DftrainError(f"no usable training images in {chosen.describe()} (its manifest lists no shards)")
    return chosen


def _plans(descriptor, positions: list[np.ndarray], options: EvaluateOptions, root: Path) -> dict[str, Plan]:
    """What to compute per training shard: the copy descriptor on every image, and on the reference
    sample only (`positions`), the Inception features (with --inception) and the embedded descriptor
    (--fd-embedded)."""
    plans = {"copy": Plan(descriptor, root)}
    inception = options.inception or os.environ.get("DFTRAIN_INCEPTION")
    if inception:
        from dftrain.evaluate.fid import InceptionFeatures

        plans["inception"] = Plan(InceptionFeatures(inception, device=options.device), root, positions)
    if options.fd_embedded and not isinstance(descriptor, EmbeddedDescriptor):
        plans["embedded"] = Plan(EmbeddedDescriptor(), root, positions)
    return plans


def _train_set(plan: Plan, shards) -> TrainSet:
    return TrainSet([stem for i, s in enumerate(shards) if (stem := plan.stem(i, s)) is not None])


def _embed_generations(extractor, gen_dir: Path, gens, options: EvaluateOptions):
    with _progress(f"{extractor.name}: generations", len(gens)) as advance:
        gen = embed_set(extractor, iter_generation_bytes(gen_dir, gens),
                        _stem(options, "gen", gen_dir, extractor.cache_id), progress=advance)
    if not gen.keys:
        raise DftrainError(f"no decodable generated images in {gen_dir}")
    return gen


def _frechet(a: np.ndarray, b: np.ndarray) -> float | None:
    from dftrain.evaluate.fid import frechet_between

    return frechet_between(a, b) if len(a) >= 2 and len(b) >= 2 else None


def _cache_counts(plans: dict[str, Plan], gens: list) -> dict:
    copy = plans["copy"]
    counts = {"train_reused": copy.rows_reused, "train_computed": copy.rows_computed,
              "train_shards_reused": copy.shards_reused, "train_shards_computed": copy.shards_computed}
    if gens:
        counts["gen_reused"] = sum(g.reused for g in gens)
        counts["gen_computed"] = sum(g.computed for g in gens)
    for name, plan in plans.items():
        if name != "copy":
            counts[f"reference_{name}"] = plan.counts()
    return counts


def evaluate(gen_dir: str | Path, train_dir: str | Path, out_dir: str | Path,
             options: EvaluateOptions | None = None) -> dict:
    """Evaluate, or with several ranks embed this rank's training shards.

    Returns the report; a rank that does not merge (rank > 0, or rank 0 while other ranks' shards
    are missing) returns {"status": "partial", ...} and writes nothing to `out_dir`.
    """
    from dftrain.outputs import check_output_folder

    options = options or EvaluateOptions()
    gen_dir, out_dir = Path(gen_dir), Path(out_dir)
    check_output_folder(out_dir, "evaluate", overwrite=options.overwrite)  # before any descriptor runs
    if options.reference_n < 1:
        raise ConfigError(f"--reference-n must be >= 1, got {options.reference_n}")
    gens = load_generations(gen_dir)
    info = _rank(options)
    manifest = _train_manifest(train_dir)
    descriptor = get_descriptor(options.descriptor, options.weights, sscd_norm=options.sscd_norm,
                                device=options.device)
    # The reference sample: seeded, over the manifest's sample counts, so every rank draws the same one.
    positions = reference_positions([s.samples for s in manifest.shards], options.reference_n, options.seed)
    with _store_root(options) as root:
        plans = _plans(descriptor, positions, options, root)
        share = -(-manifest.total_samples // info.world_size)
        with _progress(f"{descriptor.name}: training images", share) as advance:
            compute_missing(manifest.paths, manifest.shards, list(plans.values()), info.rank, info.world_size,
                            progress=advance)
        missing = missing_shards(manifest.shards, list(plans.values()))
        if missing or not info.is_main:
            log.info("rank %d of %d: training descriptors done for its shards; %d of %d shards still missing%s",
                     info.rank, info.world_size, len(missing), len(manifest.shards),
                     " (the other ranks'; run evaluate again, e.g. with --world-size 1, to merge)" if missing else "")
            return {"status": "partial", "rank": info.rank, "world_size": info.world_size,
                    "missing_shards": len(missing), "shards": len(manifest.shards),
                    "cache": _cache_counts(plans, [])}
        return _merge(gen_dir, gens, train_dir, out_dir, manifest, descriptor, plans, positions, options)


def _merge(gen_dir, gens, train_dir, out_dir, manifest, descriptor, plans, positions, options) -> dict:
    from dftrain.outputs import claim_output

    threshold = descriptor.threshold if options.threshold is None else float(options.threshold)
    train = _train_set(plans["copy"], manifest.shards)
    if not len(train):
        raise DftrainError(f"no usable training images in {manifest.describe()}")
    gen = _embed_generations(descriptor, gen_dir, gens, options)
    by_file = {g.file: g for g in gens}
    kept = [by_file[f] for f in gen.keys]

    # One streamed pass for the generations and the background: the reference sample of training
    # images against every OTHER training row (only its own row is excluded).
    ref_rows = train.rows_at_positions(positions)
    reference = train.gather(ref_rows)
    n_gen = len(gen.keys)
    result = nearest_streamed(
        np.concatenate([gen.descriptors, reference]), train.chunks, len(train),
        lambda size: train.gather(random_rows(len(train), size, options.seed)), method=options.search,
        exclude_ids=np.concatenate([np.full(n_gen, -1, np.int64), ref_rows]), ivf=options.ivf)
    best_sims, best_rows = result.sims[:n_gen, 0], result.ids[:n_gen, 0]
    bg_sims = result.sims[n_gen:, 0]
    bg_sims = bg_sims[np.isfinite(bg_sims)]  # a one-image training set has no other image
    best_keys = train.keys_of(best_rows)
    log.info("%s: %d training images (%d computed, %d reused), %d generations, %d reference images",
             descriptor.cache_id, len(train), plans["copy"].rows_computed, plans["copy"].rows_reused, n_gen,
             len(ref_rows))

    summary = metrics.similarity_summary(best_sims, threshold)
    bg = metrics.similarity_summary(bg_sims, threshold, prefix="bg_sim") if len(bg_sims) else {}
    own_keys = [g.train_key for g in kept]
    own = metrics.own_match_rate(best_keys, own_keys)
    group_of, sizes = _groups(train, best_rows, best_keys, own_keys)
    own_group = metrics.own_group_match(best_keys, own_keys, group_of, sizes, len(train))
    div, div_groups = metrics.diversity(gen.descriptors, [g.prompt for g in kept])

    fd_descriptor = _frechet(gen.descriptors, reference)
    embedded_gen = None
    if isinstance(descriptor, EmbeddedDescriptor):
        fd_embedded = fd_descriptor
    elif "embedded" in plans:
        embedded_gen = _embed_generations(plans["embedded"].descriptor, gen_dir, gens, options)
        fd_embedded = _frechet(embedded_gen.descriptors, _train_set(plans["embedded"], manifest.shards).all_rows())
    else:
        fd_embedded = None
    fid, fid_reason, inception_gen = None, NO_INCEPTION, None
    if "inception" in plans:
        inception_gen = _embed_generations(plans["inception"].descriptor, gen_dir, gens, options)
        fid = _frechet(inception_gen.descriptors, _train_set(plans["inception"], manifest.shards).all_rows())
        fid_reason = None if fid is not None else "FID needs at least two images in each set"

    report = {
        "generations_dir": str(gen_dir),
        "train_dir": (str(manifest.folders[0]) if manifest.single_folder
                      else [str(f) for f in manifest.folders]),
        "n_generations": n_gen,
        "n_train": len(train),
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
        "reference_n": len(ref_rows),
        "reference_seed": options.seed,
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
        "split": metrics.duplicate_split(best_sims, best_keys, own_keys, group_of, threshold, sizes, len(train)),
        "diversity": div,
        "diversity_prompts": div_groups,
        "fd_embedded": fd_embedded,
        "fd_descriptor": fd_descriptor,
        "fid": fid,
    }
    if fd_embedded is None and embedded_gen is None and not isinstance(descriptor, EmbeddedDescriptor):
        report["fd_embedded_reason"] = NO_FD_EMBEDDED
    if fid is None:
        report["fid_reason"] = fid_reason
    train_skipped, reader_skipped = train.skipped()
    skipped = {"generations": [k for k, _ in gen.skipped], "train": train_skipped, "train_shards": reader_skipped}
    if any(skipped.values()):
        report["skipped"] = skipped
    report["cache"] = _cache_counts(plans, [g for g in (gen, embedded_gen, inception_gen) if g is not None])

    top_rows = np.argsort(-best_sims, kind="stable")[: options.grid_size]
    shard_names = {manifest.shards[i].name for i in train.locate(best_rows[top_rows])[0].tolist()}
    with claim_output(out_dir, "evaluate", overwrite=options.overwrite):
        _write_outputs(out_dir, report, kept, best_keys, best_sims, bg_sims, threshold, descriptor, gen_dir,
                       [m.path for m in manifest.members if m.name in shard_names], options)
    return report


def _groups(train: TrainSet, best_rows: np.ndarray, best_keys: list[str], own_keys: list[str | None]):
    """Duplicate groups of the keys involved (best matches and own keys) and, for the own keys' groups,
    how many training images they hold: two passes over the key and group hashes, never a mapping of
    the whole training set. ({}, {}) when no generation names its training image."""
    wanted = {k for k in own_keys if k is not None}
    if not wanted:
        return {}, {}
    best_ids = train.ids_of(best_rows)
    group_of = {key: int(g) for key, g in zip(best_keys, best_ids[:, 1].tolist(), strict=True)}
    rows = train.find_keys({text_hash(k) for k in wanted})
    found = np.array(sorted(rows.values()), dtype=np.int64)
    for key, ids in zip(train.keys_of(found), train.ids_of(found), strict=True):
        if key in wanted:  # a 64-bit hash collision would name another key: checked here
            group_of[key] = int(ids[1])
    own_groups = {group_of[k] for k in wanted if k in group_of}
    return group_of, train.count_groups(own_groups)


def _write_outputs(out_dir, report, kept, best_keys, best_sims, bg_sims, threshold, descriptor, gen_dir,
                   train_shards, options) -> None:
    matches = [
        {"file": g.file, "best_key": k, "best_sim": float(s),
         "own": None if g.train_key is None else k == g.train_key, "train_key": g.train_key, "prompt": g.prompt}
        for g, k, s in zip(kept, best_keys, best_sims, strict=True)
    ]
    write_jsonl_atomic(out_dir / "matches.jsonl", matches)
    write_json_atomic(out_dir / "report.json", report)
    similarity_histogram(out_dir / HISTOGRAM_PNG, best_sims, bg_sims, threshold, descriptor.name)
    top = sorted(matches, key=lambda m: -m["best_sim"])[: options.grid_size]
    train_imgs = read_train_images(train_shards, {m["best_key"] for m in top})
    copy_grid(out_dir / GRID_PNG, [
        (decode_image((gen_dir / m["file"]).read_bytes()), train_imgs.get(m["best_key"]),
         f"sim {m['best_sim']:.3f}  train {m['best_key']}") for m in top])
    (out_dir / "report.md").write_text(report_markdown(report, top), encoding="utf-8")
