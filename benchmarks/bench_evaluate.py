"""Evaluation benchmarks: embedded descriptor speed and separation, and retrieval at scale.

    .venv/bin/python -m benchmarks.bench_evaluate [--quick | --full]

1. Embedded descriptor: images/s (96 px scenes and 512 px images, one process), and its
   separation on planted copies: per augmentation, the share of copies whose best match is their
   source above the documented threshold, against the share of unrelated images whose best match
   (among the same training images) is above it.
2. Retrieval: 10k query descriptors against 100k (default) and 1M (--full) synthetic training
   descriptors of the embedded descriptor's dimension (clustered unit vectors; half the queries
   are noisy copies of training rows, half fresh draws). Side by side in the same run, each in its
   own process so that peak RSS is its own:
   - baseline: numpy full similarity matrix (Q @ T.T, argmax), only where it fits in memory;
   - exact: dftrain's chunked IndexFlatIP (training rows streamed in 65,536-row chunks);
   - ivf: IVF-Flat (100k) / IVF-PQ (1M) with recall@1 against exact.
   Peak memory = peak RSS of the process minus its RSS before the measurement (data included).
3. Store (`--store`, part of the default run): 100k and 1M synthetic 512-d descriptors written as
   float16 .npy shards of 10,000 rows in dftrain's store layout (a temporary folder, deleted
   after: 1 GB on disk at 1M), then searched memory-mapped by `evaluate`'s streamed search, exact
   and IVF-Flat, each in its own process (peak RSS); and the re-evaluation speed-up from the cache:
   `evaluate` twice on the same small image training set (the second run computes no descriptor).
   From the measured rates: the projection for 400M training images.
Writes benchmarks/results/evaluate.json (evaluate-full.json with --full; evaluate-store.json with
--store alone).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = 65_536
N_CLUSTERS = 2_000


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    """This process's own peak RSS: VmHWM of its memory map. (ru_maxrss of a spawned child also counts
    the parent's RSS at the fork before its exec: it made the store rows look 200 MB larger at 1M.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _centres(dim: int, seed: int) -> np.ndarray:
    c = np.random.default_rng([seed, 0]).normal(size=(N_CLUSTERS, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def train_chunk(index: int, n: int, dim: int, seed: int) -> np.ndarray:
    """Rows [index*CHUNK, ...) of the synthetic training set: cluster centre + noise, unit length."""
    rows = min(CHUNK, n - index * CHUNK)
    rng = np.random.default_rng([seed, 1, index])
    centres = _centres(dim, seed)
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    x *= 1.0 / np.sqrt(dim)
    x += centres[rng.integers(0, N_CLUSTERS, rows)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def train_chunks(n: int, dim: int, seed: int):
    for i in range((n + CHUNK - 1) // CHUNK):
        yield train_chunk(i, n, dim, seed)


def queries(nq: int, n: int, dim: int, seed: int) -> np.ndarray:
    """First half: training rows + noise (near-copies, cos ~0.9); second half: fresh draws."""
    rng = np.random.default_rng([seed, 2])
    half = nq // 2
    rows = np.sort(rng.choice(n, size=half, replace=False))
    copies = np.concatenate([train_chunk(c, n, dim, seed)[rows[rows // CHUNK == c] % CHUNK]
                             for c in np.unique(rows // CHUNK)])
    copies = _normalise(copies + rng.normal(scale=0.5 / np.sqrt(dim), size=copies.shape))
    centres = _centres(dim, seed)
    fresh = _normalise(centres[rng.integers(0, N_CLUSTERS, nq - half)]
                       + rng.normal(scale=1.0 / np.sqrt(dim), size=(nq - half, dim)))
    return np.concatenate([copies, fresh])


def _measure(method: str, nq: int, n: int, dim: int, seed: int, params: dict, out) -> None:
    """Child process: run one search, send back time, peak memory and the top-1 ids."""
    import faiss

    from dftrain.evaluate.retrieval import IVFIndex, IVFParams, exact_search

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    q = queries(nq, n, dim, seed)
    before = _rss_mb()
    start = time.perf_counter()
    info = {}
    if method == "baseline":
        train = np.concatenate(list(train_chunks(n, dim, seed)))
        sims = q @ train.T  # the full matrix
        ids = sims.argmax(axis=1)
        info["matrix_mb"] = sims.nbytes / 2**20
    elif method == "exact":
        ids = exact_search(q, train_chunks(n, dim, seed), train_chunk=CHUNK).ids[:, 0]
    elif method == "generate":  # the time spent making the synthetic rows, to subtract
        ids = np.zeros(0)
        for chunk in train_chunks(n, dim, seed):
            ids = ids + chunk[:1, 0].sum()
    else:
        sweep = params.pop("nprobe_sweep")
        index = IVFIndex(dim, n, IVFParams(**params))
        build = time.perf_counter()
        for chunk in train_chunks(n, dim, seed):
            index.add(chunk)  # trained on the first rows: the synthetic rows are in random order
        index.search(q[:10])  # trains now if fewer rows than train_size
        info["build_s"] = time.perf_counter() - build
        info["nlist"] = index.nlist
        info["sweep"], ids = {}, {}
        for nprobe in sweep:
            index.index.nprobe = nprobe
            times = []
            for _ in range(2):  # cheap: best of two, as the machine may be shared
                search = time.perf_counter()
                ids[nprobe] = index.search(q).ids[:, 0]
                times.append(time.perf_counter() - search)
            info["sweep"][nprobe] = {"search_s": min(times)}
    info["seconds"] = time.perf_counter() - start
    info["peak_mb"] = _peak_mb() - before
    out.send((info, ids))


def run_isolated(method: str, nq: int, n: int, dim: int, seed: int = 0, params: dict | None = None):
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure, args=(method, nq, n, dim, seed, params or {}, send))
    proc.start()
    info, ids = recv.recv()
    proc.join()
    return info, ids


def bench_search(nq: int, n: int, dim: int, ivf_params: dict, with_baseline: bool, repeats: int = 2) -> dict:
    import psutil

    out: dict = {"queries": nq, "train": n, "dim": dim}
    matrix_gb = nq * n * 4 / 2**30
    fits = with_baseline and matrix_gb < 0.4 * psutil.virtual_memory().available / 2**30
    # Alternate the runs (A B A B) and keep each one's best: the machine may be shared.
    runs: dict[str, list] = {"generate": [], "exact": [], "baseline": []}
    for _ in range(repeats):
        for method in ("generate", "exact", "baseline") if fits else ("generate", "exact"):
            runs[method].append(run_isolated(method, nq, n, dim))
    gen_s = min(info["seconds"] for info, _ in runs["generate"])
    out["data_generation_s"] = gen_s
    exact, exact_ids = min(runs["exact"], key=lambda r: r[0]["seconds"])
    exact["search_s"] = exact["seconds"] - gen_s  # exact streams the rows as they are made
    exact["all_seconds"] = [info["seconds"] for info, _ in runs["exact"]]
    out["exact"] = exact
    if fits:
        base, base_ids = min(runs["baseline"], key=lambda r: r[0]["seconds"])
        base["all_seconds"] = [info["seconds"] for info, _ in runs["baseline"]]
        base["agrees_with_exact"] = float((base_ids == exact_ids).mean())
        out["baseline"] = base
        out["exact_speedup_vs_baseline"] = base["seconds"] / exact["seconds"]  # both include making the rows
        out["exact_memory_ratio_vs_baseline"] = exact["peak_mb"] / base["peak_mb"]
    else:
        out["baseline"] = {"skipped": f"full matrix needs {matrix_gb:.1f} GiB"}
    ivf, ivf_ids = run_isolated("ivf", nq, n, dim, params=dict(ivf_params))
    half = nq // 2
    ivf["params"] = ivf_params
    for nprobe, row in ivf["sweep"].items():
        ids = ivf_ids[nprobe]
        row["recall_at_1"] = float((ids == exact_ids).mean())
        row["recall_at_1_copies"] = float((ids[:half] == exact_ids[:half]).mean())
        row["recall_at_1_fresh"] = float((ids[half:] == exact_ids[half:]).mean())
        row["search_speedup_vs_exact"] = exact["search_s"] / row["search_s"]
    # Headline: the fastest setting with recall@1 >= 0.95.
    good = [p for p, r in ivf["sweep"].items() if r["recall_at_1"] >= 0.95]
    if good:
        best = min(good, key=lambda p: ivf["sweep"][p]["search_s"])
        ivf["chosen_nprobe"] = best
        ivf.update({k: v for k, v in ivf["sweep"][best].items()})
    out["ivf"] = ivf
    return out


STORE_DIM = 512  # SSCD's size: the operating point
STORE_SHARD_ROWS = 10_000  # one training shard's descriptors


def write_store(folder: Path, n: int, dim: int, seed: int = 0) -> dict:
    """The synthetic rows of train_chunks(n, dim) as store entries of STORE_SHARD_ROWS rows (float16)."""
    from dftrain.evaluate.store import save_entry

    start = time.perf_counter()
    rows = np.concatenate(list(train_chunks(n, dim, seed))) if n <= CHUNK else None
    stems, written = [], 0
    pending = []
    for chunk in ([rows] if rows is not None else train_chunks(n, dim, seed)):
        pending.append(chunk.astype(np.float16))
        block = np.concatenate(pending)
        while len(block) >= STORE_SHARD_ROWS or (written + len(block) == n and len(block)):
            part, block = block[:STORE_SHARD_ROWS], block[STORE_SHARD_ROWS:]
            stem = folder / f"{len(stems):06d}"
            ids = np.stack([np.arange(written, written + len(part))] * 2 + [np.arange(len(part))], axis=1)
            save_entry(stem, part, [str(i) for i in range(written, written + len(part))], ids, {"shard": stem.name})
            stems.append(stem)
            written += len(part)
        pending = [block]
    size = sum(f.stat().st_size for f in folder.iterdir())
    return {"rows": written, "entries": len(stems), "bytes_on_disk": size, "write_s": time.perf_counter() - start}


def _measure_store(method: str, folder: str, nq: int, n: int, dim: int, params: dict, out) -> None:
    """Child process: evaluate's streamed search over the memory-mapped store; time, peak RSS, top-1 ids."""
    import faiss

    from dftrain.evaluate.retrieval import IVFIndex, IVFParams, nearest_streamed, random_rows
    from dftrain.evaluate.store import TrainSet

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    # Made by the parent: generating them here would set this process's peak RSS before the search.
    q = np.load(Path(folder) / "queries.npy")
    train = TrainSet(sorted(p.with_name(p.name[:-5]) for p in Path(folder).glob("*[0-9].json")))
    before = _rss_mb()
    start = time.perf_counter()
    info = {}
    if method == "exact":
        result = nearest_streamed(q, train.chunks, len(train), lambda size: None, method="exact")
    else:  # ivf_search_streamed's steps, timed apart: training, filling (streamed), searching
        index = IVFIndex(dim, len(train), IVFParams(**params))
        index.train(train.gather(random_rows(len(train), index.train_size, 0)))
        info["train_s"] = time.perf_counter() - start
        for chunk in train.chunks():
            index.add(chunk)
        info["build_s"] = time.perf_counter() - start
        search = time.perf_counter()
        result = index.search(q)
        info["search_s"] = time.perf_counter() - search
    info.update({"seconds": time.perf_counter() - start, "peak_mb": _peak_mb() - before, "rss_before_mb": before})
    out.send((info, result.ids[:, 0]))


def _run_store(method, folder, nq, n, dim, params=None):
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure_store, args=(method, str(folder), nq, n, dim, params or {}, send))
    proc.start()
    info, ids = recv.recv()
    proc.join()
    return info, ids


def bench_store_search(sizes=(100_000, 1_000_000), nq: int = 2_000, dim: int = STORE_DIM,
                       ivf: dict | None = None) -> list[dict]:
    """Exact and IVF-Flat search over memory-mapped float16 shards, 100k vs 1M, in a temporary folder."""
    import shutil
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="dftrain-bench-store-") as tmp:
        for n in sizes:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            row = {"train": n, "queries": nq, "dim": dim, "store": write_store(folder, n, dim)}
            np.save(folder / "queries.npy", queries(nq, n, dim, 0))
            print(json.dumps(row["store"]), flush=True)
            exact, exact_ids = _run_store("exact", folder, nq, n, dim)
            exact["query_rows_per_s"] = nq * n / exact["seconds"]
            row["exact"] = exact
            # IVF-Flat at about 1,000-2,000 rows per cell (the 100k/1M settings of the search benchmark above).
            params = dict(ivf or ({"nlist": 1024, "nprobe": 4, "train_size": 65_536} if n <= 100_000 else
                                  {"nlist": 2048, "nprobe": 2, "train_size": 131_072}))
            approx, approx_ids = _run_store("ivf", folder, nq, n, dim, params)
            half = nq // 2
            approx.update({"params": params, "recall_at_1": float((approx_ids == exact_ids).mean()),
                           "recall_at_1_copies": float((approx_ids[:half] == exact_ids[:half]).mean()),
                           "search_speedup_vs_exact": exact["seconds"] / approx["search_s"]})
            row["ivf"] = approx
            print(json.dumps(row), flush=True)
            rows.append(row)
            shutil.rmtree(folder)
    return rows


def bench_cache(n_train: int = 5_000, n_gen: int = 50, samples_per_shard: int = 100) -> dict:
    """`evaluate` twice on one training set: the second run reuses every training descriptor."""
    import io
    import logging
    import tempfile

    from dftrain.evaluate.calibrate import scenes
    from dftrain.evaluate.run import EvaluateOptions, evaluate
    from dftrain.shards import ShardWriter

    logging.getLogger("dftrain").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="dftrain-bench-cache-") as tmp:
        tmp = Path(tmp)
        with ShardWriter(tmp / "train", samples_per_shard=samples_per_shard, kind="train") as writer:
            for i, img in enumerate(scenes(n_train, seed=5)):
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=90)
                writer.write({"__key__": f"{i:06d}", "jpg": buf.getvalue(), "txt": "c", "json": {"caption": "c"}})
        (tmp / "gen").mkdir()
        for i, img in enumerate(scenes(n_gen, seed=6)):
            img.save(tmp / "gen" / f"{i:04d}.png")
        runs = []
        for attempt in range(2):
            start = time.perf_counter()
            report = evaluate(tmp / "gen", tmp / "train", tmp / f"out{attempt}",
                              EvaluateOptions(cache_dir=tmp / "cache", reference_n=500))
            runs.append({"seconds": time.perf_counter() - start, "cache": report["cache"]})
    first, second = runs
    return {"n_train": n_train, "n_generations": n_gen, "first": first, "second": second,
            "speedup": first["seconds"] / second["seconds"],
            "train_images_per_s_first": n_train / first["seconds"]}


def project_400m(search: list[dict], cache: dict | None, descriptor: dict | None, n: int = 400_000_000,
                 dim: int = STORE_DIM, n_queries: int = 20_000) -> dict:
    """Time and memory for `n` training images from the measured rates (one process, this machine)."""
    big = max(search, key=lambda r: r["train"])
    rate = big["exact"]["query_rows_per_s"]
    out = {
        "train_images": n, "queries": n_queries, "dim": dim,
        "descriptor_files_gb": n * dim * 2 / 1e9, "id_files_gb": n * 24 / 1e9,
        "exact_search_hours_one_core": n_queries * n / rate / 3600,
        "exact_search_peak_mb": big["exact"]["peak_mb"],  # bounded by the chunk: as measured at 1M
        "ivf_flat_index_gb": n * (dim * 4 + 8) / 1e9,
        "ivf_pq64_index_gb": n * (64 + 8) / 1e9,
    }
    if descriptor:
        out["embedded_descriptor_core_hours"] = n / descriptor["images_per_s_96px"] / 3600
    if cache:
        out["cache"] = "the second evaluation reads the descriptor files instead of decoding and embedding images"
    return out


def bench_descriptor(n: int) -> dict:
    from PIL import Image

    from dftrain.evaluate.calibrate import scenes
    from dftrain.evaluate.descriptors import EmbeddedDescriptor

    d = EmbeddedDescriptor()
    small = scenes(n, seed=3)
    big = [im.resize((512, 512), Image.Resampling.BICUBIC) for im in small[: max(8, n // 4)]]
    out = {"dim": d.dim}
    for name, imgs in (("96px", small), ("512px", big)):
        d.embed(imgs[:8])  # warm-up
        start = time.perf_counter()
        d.embed(imgs)
        out[f"images_per_s_{name}"] = len(imgs) / (time.perf_counter() - start)
    return out


def bench_separation(n_train: int, n_copies: int, n_unrelated: int) -> dict:
    """Planted copies vs unrelated images, on random scenes and on dftrain.synthetic images."""
    import io

    from PIL import Image

    from dftrain.evaluate.augment import AUGMENTATIONS, augment
    from dftrain.evaluate.calibrate import scenes
    from dftrain.evaluate.descriptors import EmbeddedDescriptor

    d = EmbeddedDescriptor()
    sets = {"scenes": scenes(n_train + n_unrelated, seed=11)}
    try:
        from dftrain.synthetic.dataset import synthetic_train_samples

        sets["synthetic"] = [Image.open(io.BytesIO(s["jpg"])).convert("RGB")
                             for s in synthetic_train_samples(n_train + n_unrelated, 64, 0.0, 5)]
    except Exception as exc:  # noqa: BLE001 - the other stage may not be installed
        print(f"synthetic images unavailable: {exc}", file=sys.stderr)
    thresholds = [0.5, 0.6, 0.65, 0.7, 0.75, 0.8]
    out = {"threshold": d.threshold, "n_train": n_train, "n_copies": n_copies, "n_unrelated": n_unrelated}
    for name, images in sets.items():
        train, unrelated = images[:n_train], images[n_train:]
        t = d.embed(train)
        best_unrelated = (d.embed(unrelated) @ t.T).max(axis=1)
        row = {"unrelated_best_sim_p50": float(np.median(best_unrelated)),
               "unrelated_best_sim_p95": float(np.percentile(best_unrelated, 95)),
               "unrelated_above": {str(x): float((best_unrelated > x).mean()) for x in thresholds}}
        rng = np.random.default_rng(0)
        for kinds in [(k,) for k in AUGMENTATIONS] + [AUGMENTATIONS]:
            sims = d.embed([augment(train[i], rng, kinds) for i in range(n_copies)]) @ t.T
            own = sims[np.arange(n_copies), np.arange(n_copies)]
            found = sims.argmax(axis=1) == np.arange(n_copies)
            row["+".join(kinds)] = {
                "rank1": float(found.mean()), "own_sim_p5": float(np.percentile(own, 5)),
                "found_above": {str(x): float((found & (own > x)).mean()) for x in thresholds}}
        out[name] = row
    return out


def separation_table(separation: dict) -> str:
    """Markdown: per image set and augmentation, copies found above the threshold; unrelated above it."""
    t = str(separation["threshold"])
    lines = ["| images | augmentation | rank-1 | copies found > " + t + " | copy sim p5 |",
             "| --- | --- | --- | --- | --- |"]
    for name in ("scenes", "synthetic"):
        row = separation.get(name)
        if not row:
            continue
        for kind, v in row.items():
            if isinstance(v, dict) and "rank1" in v:
                lines.append(f"| {name} | {kind} | {v['rank1']:.3f} | {v['found_above'][t]:.3f} | {v['own_sim_p5']:.3f} |")
        above = ", ".join(f"{x}: {p:.3f}" for x, p in row["unrelated_above"].items())
        lines.append(f"| {name} | unrelated, best of {separation['n_train']} > threshold | | {above} | |")
    return "\n".join(lines)


def main_store(quick: bool = False) -> dict:
    """The store benchmark alone (--store): memory-mapped search at 100k and 1M, cache, projection."""
    results: dict = {"quick": quick, "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset")}
    results["descriptor"] = bench_descriptor(64)
    results["cache"] = bench_cache(300 if quick else 5_000)
    print(json.dumps(results["cache"]), flush=True)
    sizes = (20_000, 100_000) if quick else (100_000, 1_000_000)
    results["store_search"] = bench_store_search(sizes, nq=500 if quick else 2_000)
    results["projection_400m"] = project_400m(results["store_search"], results["cache"], results["descriptor"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("evaluate-store-quick.json" if quick else "evaluate-store.json")).write_text(
        json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


def main(quick: bool = False, full: bool = False) -> dict:
    from dftrain.evaluate.descriptors import EmbeddedDescriptor

    dim = EmbeddedDescriptor().dim
    results: dict = {"quick": quick, "full": full, "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset")}
    results["descriptor"] = bench_descriptor(64 if quick else 256)
    print(json.dumps(results["descriptor"]), flush=True)
    results["separation"] = bench_separation(100 if quick else 300, 50 if quick else 150, 50 if quick else 150)
    print(separation_table(results["separation"]), flush=True)
    nq = 2_000 if quick else 10_000
    sizes = [(20_000, {"nlist": 128, "nprobe_sweep": [1, 2, 4]})] if quick else [(100_000, {"nlist": 1024, "nprobe_sweep": [1, 2, 4, 8]})]
    if full:
        # IVF-Flat: recall@1 >= 0.95. IVF-PQ (add "pq_m": 79) holds 79 bytes per row instead of 1,896
        # but its top-1 among near-tied neighbours is often wrong (benchmarks/RESULTS.md).
        sizes.append((1_000_000, {"nlist": 2048, "train_size": 131_072, "nprobe_sweep": [1, 2, 4, 8]}))
    results["search"] = []
    for n, params in sizes:
        row = bench_search(nq, n, dim, params, with_baseline=True, repeats=1 if n > 100_000 else 2)
        print(json.dumps(row), flush=True)
        results["search"].append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("evaluate-full.json" if full else "evaluate.json")).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    if "--store" in sys.argv:
        main_store(quick="--quick" in sys.argv)
    else:
        main(quick="--quick" in sys.argv, full="--full" in sys.argv)
