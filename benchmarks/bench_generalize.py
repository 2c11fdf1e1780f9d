"""Caption generalization with the embedded model (SmolLM2-135M, CPU): speed and quality.

    .venv/bin/python -m benchmarks.bench_generalize [--quick] [--dedup-only] [--ray]

Speed (captions/s, greedy fp32, one process):
- the same unique captions at batch 1, 8 and 32 (shared few-shot prefix KV cache on), and at
  batch 8 with the prefix cache off;
- a LAION-like shard with repeated captions: dftrain's path (in-shard dedup + batch 32)
  against the baseline, one caption at a time for every sample, run side by side.
Scale (--dedup-only runs just this): a LAION-like set of 2,000 captions in 10 shards of 200, drawn with
Zipf(1.0) repetition from 500 distinct synthetic captions (re-uploads within and across shards), through the
whole stage (generalize_shards, fallback chain, shard IO): --dedup global vs --dedup shard, both batch 32,
vs one caption at a time for every sample (its rate measured on the first 60 samples: it reuses nothing,
so its rate does not depend on the set); dedup ratios; whether both dedup modes wrote the same bytes.
Runner (--ray runs just this): the same set through --dedup global with the plain runner (one process, 2 torch
threads) and with --engine ray (2 model workers of 1 thread) on the 2 cores; seconds, ratio, same bytes.
Quality, through the whole chain (LLM, retry, rule-based fallback):
- 100 synthetic specific captions (dftrain.synthetic) and 40 hand-written LAION-like ones:
  mean generality score before/after (dftrain.score), share of outputs under 5 words,
  which step produced each caption, and the share of first LLM answers that were accepted;
  the LAION-like ones again with --target-generality 7 (re-asked at most twice).
Writes benchmarks/results/generalize.json.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

LAION_LIKE = [
    "Canon EOS 5D Mark IV DSLR camera body with 24-70mm lens",
    "A golden retriever puppy named Buddy playing in a park in Seattle, 2018",
    "Starbucks Pumpkin Spice Latte cup on a wooden table, autumn 2020",
    "Lego Star Wars Millennium Falcon set 75257",
    "Woman in a yellow raincoat walking her corgi in the rain",
    "Sunset over the Golden Gate Bridge in San Francisco, HD wallpaper",
    "Adidas Ultraboost 22 running shoes core black size 9.5",
    "Barack Obama giving a speech at the White House in 2012",
    "IKEA BILLY bookcase white 80x28x202 cm",
    "Vintage 1950s Coca-Cola advertising poster, original lithograph",
    "Taylor Swift performing on stage during the Eras Tour in Los Angeles",
    "Handmade ceramic coffee mug with blue glaze, 12 oz, by Clayworks Studio",
    "Aerial view of Manhattan skyline at night from the Empire State Building",
    "2021 Tesla Model 3 Long Range in pearl white parked in a driveway",
    "Samsung Galaxy S23 Ultra 512GB phantom black unlocked smartphone",
    "Close-up of a monarch butterfly on a purple coneflower in my garden",
    "The Starry Night by Vincent van Gogh, 1889, oil on canvas",
    "Fresh homemade margherita pizza with basil from Joe's Pizzeria in Brooklyn",
    "Snow-covered cabin in the Swiss Alps near Zermatt, December 2019",
    "Men's Levi's 501 Original Fit jeans in dark stonewash, W32 L34",
    "Cute tabby kitten sleeping in a basket, stock photo 123456789",
    "Harry Potter and the Philosopher's Stone first edition hardcover, Bloomsbury 1997",
    "Toyota Hilux 4x4 driving through the desert in Namibia",
    "Wedding of Emma and James at Lake Como, Italy, June 2022",
    "Dell XPS 13 9310 laptop with 11th Gen Intel Core i7 on a desk",
    "Red rose bouquet for Valentine's Day with a card saying I love you",
    "Old fisherman mending nets in the harbor of Essaouira, Morocco",
    "Nintendo Switch OLED console with neon red and blue Joy-Con controllers",
    "Chocolate chip cookies cooling on a wire rack, recipe by Martha Stewart",
    "Mount Everest base camp with colorful tents, Nepal 2015",
    "Rolex Submariner Date 126610LN stainless steel watch",
    "Kids playing soccer on a dirt field in Rio de Janeiro",
    "Boeing 747-400 of British Airways taking off from Heathrow",
    "Minimalist living room with a grey sofa and a monstera plant, Scandinavian design",
    "Bowl of ramen with soft-boiled egg at Ichiran in Tokyo",
    "Portrait of Albert Einstein sticking out his tongue, 1951",
    "KitchenAid Artisan stand mixer 5KSM175 in empire red",
    "Waves crashing on the rocks at Big Sur, California, golden hour",
    "Border collie herding sheep in the Scottish Highlands",
    "Apple AirPods Pro 2nd generation with MagSafe charging case",
]


def synthetic_captions(n: int) -> list[str]:
    from dftrain.synthetic.dataset import synthetic_train_samples

    return [s["txt"] for s in synthetic_train_samples(n, 32, 0.0, seed=7)]


def shard_captions(n: int) -> list[str]:
    """A LAION-like shard: synthetic captions with re-uploads (exact and near duplicates)."""
    from dftrain.synthetic.dataset import synthetic_train_samples

    return [s["txt"] for s in synthetic_train_samples(n, 32, 0.4, seed=11)]


def laion_like_shards(samples: int, shards: int, pool: int, seed: int = 5) -> list[list[str]]:
    """`shards` shards of samples // shards captions, each drawn independently with Zipf(1.0) weights from
    one pool of distinct synthetic captions: a few captions everywhere, a long tail seen once."""
    import numpy as np

    from dftrain.synthetic.dataset import synthetic_train_samples

    distinct = list(dict.fromkeys(s["txt"] for s in synthetic_train_samples(pool, 32, 0.0, seed=21)))
    weights = 1.0 / np.arange(1, len(distinct) + 1)
    rng = np.random.default_rng(seed)
    return [[distinct[i] for i in rng.choice(len(distinct), samples // shards, p=weights / weights.sum())]
            for _ in range(shards)]


class CountingBackend:
    """Wraps a backend and counts the prompts it is given."""

    def __init__(self, backend):
        self.inner, self.prompts = backend, 0
        self.name, self.model_id = backend.name, backend.model_id

    def complete(self, prompts, **kwargs):
        self.prompts += len(prompts)
        return self.inner.complete(prompts, **kwargs)

    def chat(self, conversations, **kwargs):
        self.prompts += len(conversations)
        return self.inner.chat(conversations, **kwargs)


def dedup_at_scale(backend, spec, quick: bool) -> dict:
    import tempfile

    from dftrain.generalize.generalizer import Generalizer
    from dftrain.generalize.stage import generalize_shards
    from tests.generalize_helpers import write_input_shards

    samples, n_shards, baseline_n = (400, 4, 16) if quick else (2000, 10, 60)
    shards = laion_like_shards(samples, n_shards, 500)
    flat = [c for shard in shards for c in shard]
    result: dict = {"samples": len(flat), "shards": n_shards, "distinct_captions": len(set(flat)),
                    "distinct_within_shards_summed": sum(len(set(s)) for s in shards)}
    result["dedup_ratio_global"] = round(len(flat) / result["distinct_captions"], 2)
    result["dedup_ratio_per_shard"] = round(len(flat) / result["distinct_within_shards_summed"], 2)
    with tempfile.TemporaryDirectory() as tmp:
        in_dir = write_input_shards(Path(tmp) / "in", shards)
        tars = {}
        for mode in ("global", "shard"):
            counting = CountingBackend(backend)
            started = time.perf_counter()
            generalize_shards(in_dir, Path(tmp) / mode, backend="embedded", backend_instance=counting, batch_size=32,
                              score="off", faithful=False, progress=False, rank=0, world_size=1, dedup=mode,
                              dedup_parts=8)
            seconds = time.perf_counter() - started
            result[f"dedup_{mode}"] = {"seconds": round(seconds, 2), "llm_prompts": counting.prompts,
                                       "captions_per_s": round(len(flat) / seconds, 3)}
            tars[mode] = {p.name: p.read_bytes() for p in sorted((Path(tmp) / mode).glob("*.tar"))}
        result["same_output_both_modes"] = tars["global"] == tars["shard"]
    started = time.perf_counter()
    Generalizer(backend, spec, batch_size=1).generalize(flat[:baseline_n])
    baseline_rate = baseline_n / (time.perf_counter() - started)
    result["one_at_a_time"] = {"measured_on_samples": baseline_n, "captions_per_s": round(baseline_rate, 3)}
    for mode in ("global", "shard"):
        result[f"speedup_{mode}_vs_one_at_a_time"] = round(result[f"dedup_{mode}"]["captions_per_s"] / baseline_rate,
                                                           2)
    result["speedup_global_vs_shard"] = round(result["dedup_shard"]["seconds"] / result["dedup_global"]["seconds"],
                                              2)
    return result


def ray_vs_plain(quick: bool) -> dict:
    """The same LAION-like set through --dedup global with the plain runner (one process, 2 torch threads)
    and with --engine ray (2 model workers, 1 thread each) on this machine's 2 cores; same output?"""
    import os
    import tempfile

    import torch

    from dftrain.generalize.stage import generalize_shards
    from tests.generalize_helpers import write_input_shards

    os.environ["OMP_NUM_THREADS"] = "1"  # each Ray worker: one thread, as one rank per core would
    samples, n_shards = (400, 4) if quick else (2000, 10)
    shards = laion_like_shards(samples, n_shards, 500)
    result: dict = {"samples": samples, "shards": n_shards, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        in_dir = write_input_shards(Path(tmp) / "in", shards)
        common = {"backend": "embedded", "batch_size": 32, "score": "off", "faithful": False, "progress": False,
                  "rank": 0, "world_size": 1, "dedup": "global", "dedup_parts": 8}
        torch.set_num_threads(2)
        started = time.perf_counter()
        generalize_shards(in_dir, Path(tmp) / "plain", **common)
        result["plain_2_threads"] = {"seconds": round(time.perf_counter() - started, 2)}
        torch.set_num_threads(1)
        started = time.perf_counter()
        generalize_shards(in_dir, Path(tmp) / "ray", engine="ray", ray_workers=2, **common)
        result["ray_2_workers"] = {"seconds": round(time.perf_counter() - started, 2)}
        for name in ("plain_2_threads", "ray_2_workers"):
            result[name]["captions_per_s"] = round(samples / result[name]["seconds"], 3)
        result["ray_vs_plain"] = round(result["plain_2_threads"]["seconds"] / result["ray_2_workers"]["seconds"], 2)
        read = {m: {p.name: p.read_bytes() for p in sorted((Path(tmp) / m).glob("*.tar"))} for m in ("plain", "ray")}
        result["same_output"] = read["plain"] == read["ray"]
    return result


def rate(backend, spec, captions: list[str], batch_size: int) -> dict:
    from dftrain.generalize.prompts import ask

    started = time.perf_counter()
    outputs = []
    for i in range(0, len(captions), batch_size):
        outputs += ask(backend, spec, captions[i:i + batch_size])
    seconds = time.perf_counter() - started
    return {"captions": len(captions), "seconds": round(seconds, 2),
            "captions_per_s": round(len(captions) / seconds, 3), "outputs": outputs}


def quality(backend, spec, scorer, captions: list[str], batch_size: int, target: float | None = None) -> dict:
    from dftrain.generalize.generalizer import Generalizer

    started = time.perf_counter()
    results = Generalizer(backend, spec, batch_size=batch_size, scorer=scorer, target_generality=target,
                          rounds=2).generalize(captions)
    seconds = time.perf_counter() - started
    outputs = [r.caption for r in results]
    before = [s["generality"] for s in scorer.score_many(captions)]
    after = [s["generality"] for s in scorer.score_many(outputs)]
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    return {
        "captions": len(captions),
        "generality_before_mean": round(mean_before, 3),
        "generality_after_mean": round(mean_after, 3),
        "generality_gain": round(mean_after - mean_before, 3),
        "share_under_5_words": round(sum(len(o.split()) < 5 for o in outputs) / len(outputs), 3),
        "steps": dict(Counter(r.step for r in results)),
        # Captions whose first LLM answer passed cleaning and validation.
        "first_llm_answer_accepted": round(sum(r.reason is None for r in results) / len(results), 3),
        "reasked_and_improved": sum(r.rounds > 0 for r in results),
        "fallback_reasons": dict(Counter(r.reason for r in results if r.reason)),
        "chain_seconds": round(seconds, 2),
        "examples": [[c, o, r.step] for c, o, r in zip(captions[:12], outputs[:12], results[:12], strict=True)],
    }


def main(quick: bool = False, dedup_only: bool = False, ray: bool = False) -> dict:
    import torch

    from dftrain.generalize.generalizer import Generalizer
    from dftrain.generalize.prompts import make_prompt_spec
    from dftrain.llm.backends import load_backend
    from dftrain.score import load_scorer

    if ray:  # --ray runs just the plain vs Ray runner comparison, kept beside the other figures
        previous = RESULTS / "generalize.json"
        result = json.loads(previous.read_text()) if previous.is_file() else {}
        result["ray_vs_plain"] = ray_vs_plain(quick)
        _save(result)
        return result
    torch.set_num_threads(1)
    unique_n, shard_n, synthetic_n = (8, 16, 20) if quick else (24, 48, 100)
    started = time.perf_counter()
    backend = load_backend("embedded")
    load_seconds = time.perf_counter() - started
    spec = make_prompt_spec("embedded")
    result: dict = {"model": backend.model_id, "dtype": "float32", "threads": torch.get_num_threads(),
                    "quick": quick, "load_seconds": round(load_seconds, 2)}
    if dedup_only:
        previous = RESULTS / "generalize.json"
        result = {**(json.loads(previous.read_text()) if previous.is_file() else {}), **result}
        result["laion_like_dedup"] = dedup_at_scale(backend, spec, quick)
        _save(result)
        return result

    captions = LAION_LIKE[:unique_n]
    speed = {f"batch_{b}": rate(backend, spec, captions, b) for b in (1, 8, 32)}
    backend.use_prefix_cache = False
    speed["batch_8_no_prefix_cache"] = rate(backend, spec, captions, 8)
    backend.use_prefix_cache = True
    reference = speed["batch_1"]["outputs"]
    result["speed"] = {
        **{k: {kk: vv for kk, vv in v.items() if kk != "outputs"} for k, v in speed.items()},
        "outputs_identical_across_batch_sizes": all(v["outputs"] == reference for v in speed.values()),
        "ratio_batch_8_vs_1": round(speed["batch_8"]["captions_per_s"] / speed["batch_1"]["captions_per_s"], 2),
        "ratio_batch_32_vs_1": round(speed["batch_32"]["captions_per_s"] / speed["batch_1"]["captions_per_s"], 2),
        "ratio_prefix_cache_on_vs_off_batch_8": round(
            speed["batch_8"]["captions_per_s"] / speed["batch_8_no_prefix_cache"]["captions_per_s"], 2),
    }

    # A shard with repeats: dedup + batch 32 (the stage's path) vs one caption at a time for every sample.
    shard = shard_captions(shard_n)
    unique = list(dict.fromkeys(shard))
    t0 = time.perf_counter()
    Generalizer(backend, spec, batch_size=32, fallback=("rule",)).generalize(unique)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    Generalizer(backend, spec, batch_size=1, fallback=("rule",)).generalize(shard)
    baseline = time.perf_counter() - t0
    result["shard_dedup_and_batching"] = {
        "samples": len(shard), "unique_captions": len(unique),
        "dftrain_dedup_batch32_captions_per_s": round(len(shard) / ours, 3),
        "baseline_one_at_a_time_captions_per_s": round(len(shard) / baseline, 3),
        "speedup": round(baseline / ours, 2),
    }

    try:
        scorer = load_scorer()
    except Exception as exc:  # report what we measured even when the score module is broken
        result["quality_error"] = f"{type(exc).__name__}: {exc}"
        scorer = None
    if scorer is None:
        _save(result)
        return result
    result["quality_synthetic"] = quality(backend, spec, scorer, synthetic_captions(synthetic_n), 32)
    laion = LAION_LIKE[: 12 if quick else 40]
    result["quality_laion_like"] = quality(backend, spec, scorer, laion, 32)
    # Beyond the paper: re-ask (at most 2 rounds) for captions scoring below 7.
    result["quality_laion_like_target_7"] = quality(backend, spec, scorer, laion, 32, target=7.0)
    result["laion_like_dedup"] = dedup_at_scale(backend, spec, quick)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    _save(result)
    return result


def _save(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generalize.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:], dedup_only="--dedup-only" in sys.argv[1:], ray="--ray" in sys.argv[1:])
