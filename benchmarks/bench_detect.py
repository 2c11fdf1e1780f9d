"""`dftrain detect` against the evaluation's own copy judgement, on the reproduce experiment's models.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.bench_detect [--reproduce runs/reproduce]

For every (variant, seed) of a `dftrain reproduce` output folder that has a trained pipeline and an
evaluation: the prompts are the original captions it generated from; a prompt is a copy prompt when
one of its generations is a copy by the evaluation (best similarity to a training image above the
descriptor's copy threshold, from eval/.../matches.jsonl), and, second label, when the nearest
training image of one of its generations is (a duplicate of) the prompt's own image. detect scores
every prompt (same sampling steps and guidance as the experiment's generations, 4 starting noises,
several numbers of measured first steps), and the ROC AUC of the score against each label is
reported per model and averaged. Without a reproduce folder it records that it was skipped.
Writes benchmarks/results/detect.json.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FIRST_STEPS = (1, 5, 20)


def _labels(matches: list[dict], threshold: float, groups: dict) -> dict[str, dict]:
    """prompt -> {train_key, copy (similarity label), own (duplicate-aware own match)}."""
    out: dict[str, dict] = defaultdict(lambda: {"copy": False, "own": False, "train_key": None})
    for m in matches:
        row = out[m["prompt"]]
        row["train_key"] = m.get("train_key")
        row["copy"] |= m["best_sim"] > threshold
        key, best = m.get("train_key"), m.get("best_key")
        row["own"] |= key is not None and key in groups and groups.get(best) == groups[key]
    return dict(out)


def measure_model(pipeline: Path, eval_dir: Path, groups: dict, steps: int, guidance: float) -> dict:
    from dftrain.evaluate.detect import DetectOptions, roc_auc, score_prompts
    from dftrain.evaluate.generate import load_pipeline

    matches = [json.loads(line) for line in (eval_dir / "matches.jsonl").read_text().splitlines() if line.strip()]
    threshold = json.loads((eval_dir / "report.json").read_text())["threshold"]
    labels = _labels(matches, threshold, groups)
    prompts = list(labels)
    pipe = load_pipeline(pipeline, "cpu", "fp32")
    result = {"prompts": len(prompts), "copy_prompts": sum(v["copy"] for v in labels.values()),
              "own_prompts": sum(v["own"] for v in labels.values()), "copy_threshold": threshold, "auc": {},
              "rows": {}}
    for k in FIRST_STEPS:
        started = time.perf_counter()
        rows = score_prompts(pipe, prompts, DetectOptions(steps=steps, first_steps=min(k, steps), generations=4,
                                                          guidance=guidance, batch_size=16))
        scores = [r["score"] for r in rows]
        result["rows"][f"first_{k}"] = [[sc, labels[p]["copy"], labels[p]["own"]] for sc, p in zip(scores, prompts, strict=True)]
        result["auc"][f"first_{k}"] = {
            "copy": roc_auc(scores, [labels[p]["copy"] for p in prompts]),
            "own": roc_auc(scores, [labels[p]["own"] for p in prompts]),
            "seconds": round(time.perf_counter() - started, 2),
        }
    return result


def _mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 3) if values else None


def main(quick: bool = False, reproduce: str | Path = "runs/reproduce") -> dict:
    import torch
    import yaml

    from dftrain.experiments.report import train_groups

    torch.set_num_threads(1)
    root = Path(reproduce)
    result: dict = {"reproduce": str(root)}
    runs = sorted(root.glob("runs/*/seed*/pipeline")) if root.is_dir() else []
    if not runs:
        result["skipped"] = f"no trained pipelines under {root}/runs (run `make reproduce` first)"
        _save(result)
        return result
    # the generations' sampling settings (profile cpu of the experiment file)
    gen = yaml.safe_load((HERE.parent / "experiments" / "mini.yaml").read_text())["generate"]
    steps, guidance = int(gen.get("steps", 20)), float(gen.get("guidance", 3.0))
    groups = train_groups(root / "data" / "train")
    result.update({"steps": steps, "guidance": guidance, "models": {}})
    for pipeline in runs[: 1 if quick else None]:
        variant, seed = pipeline.parent.parent.name, pipeline.parent.name
        eval_dir = root / "eval" / variant / seed
        if not (eval_dir / "matches.jsonl").is_file():
            continue
        result["models"][f"{variant}/{seed}"] = measure_model(pipeline, eval_dir, groups, steps, guidance)
        print(variant, seed, json.dumps({k: v for k, v in result["models"][f"{variant}/{seed}"].items()
                                         if k != "rows"}), flush=True)
    from dftrain.evaluate.detect import roc_auc

    result["mean_auc"] = {
        k: {label: _mean(m["auc"][f"first_{k}"][label] for m in result["models"].values()) for label in ("copy", "own")}
        for k in FIRST_STEPS}
    # every (model, prompt) pair together: is this prompt memorized by this model (same architecture,
    # same prompts, models that copy a lot and models that copy little)
    pooled = {}
    for k in FIRST_STEPS:
        rows = [r for m in result["models"].values() for r in m["rows"][f"first_{k}"]]
        pooled[k] = {"pairs": len(rows), "copy": roc_auc([r[0] for r in rows], [r[1] for r in rows]),
                     "own": roc_auc([r[0] for r in rows], [r[2] for r in rows])}
        pooled[k] = {key: round(v, 3) if isinstance(v, float) else v for key, v in pooled[k].items()}
    result["pooled_auc"] = pooled
    _save(result)
    return result


def _save(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "detect.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("mean_auc", "pooled_auc", "skipped") if k in result}, indent=2))


if __name__ == "__main__":
    args = sys.argv[1:]
    where = args[args.index("--reproduce") + 1] if "--reproduce" in args else "runs/reproduce"
    main(quick="--quick" in args, reproduce=where)
