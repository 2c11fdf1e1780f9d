"""Pure statistics for `dftrain reproduce`: spread over seeds, paired differences, duplicate-aware matching."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from dftrain.evaluate.compare import relative_change_pct


def mean_std(values: Sequence[float | None]) -> dict:
    """Mean and sample standard deviation (ddof 1; None for one value) of the values that are not None."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return {"n": 0, "mean": None, "std": None, "values": []}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return {"n": len(xs), "mean": mean, "std": std, "values": xs}


def paired_t_p(differences: Sequence[float]) -> float | None:
    """Two-sided p-value of a paired t-test on per-seed differences (H0: mean difference 0; scipy's
    one-sample t-test of the differences, which is `ttest_rel`); None with fewer than 2 pairs or when
    every difference is the same."""
    if len(differences) < 2 or not mean_std(differences)["std"]:
        return None
    from scipy import stats as scipy_stats

    return float(scipy_stats.ttest_1samp(differences, 0.0).pvalue)


def paired_comparison(baseline: Mapping[int, float | None], variant: Mapping[int, float | None]) -> dict:
    """Per-seed change of a variant against the baseline of the same seed.

    Returns the seeds paired, the per-seed relative change in %, its mean and std, the mean
    absolute difference and the paired t-test p-value.
    """
    seeds = sorted(s for s in baseline if s in variant and baseline[s] is not None and variant[s] is not None)
    diffs = [float(variant[s]) - float(baseline[s]) for s in seeds]
    changes = [relative_change_pct(baseline[s], variant[s]) for s in seeds]
    change = mean_std([c for c in changes if c is not None])
    return {"seeds": seeds, "change_pct": change, "diff": mean_std(diffs), "p_value": paired_t_p(diffs)}


def own_group_match(matches: Sequence[Mapping], group_of: Mapping[str, object]) -> dict:
    """Duplicate-aware own-caption match of matches.jsonl rows (dftrain.evaluate.metrics.own_group_match)."""
    from dftrain.evaluate.metrics import own_group_match as by_keys

    return by_keys([row.get("best_key") for row in matches], [row.get("train_key") for row in matches], group_of)


def final_loss(history: Sequence[Mapping], tail_fraction: float = 0.1, min_points: int = 3) -> float | None:
    """Mean training loss over the last `tail_fraction` of the logged steps (at least `min_points`
    log lines): one logged loss is too noisy (random timesteps) to compare runs."""
    points = [(int(r["step"]), float(r["loss"])) for r in history if "loss" in r and "step" in r]
    if not points:
        return None
    points.sort()
    last_step = points[-1][0]
    tail = [loss for step, loss in points if step >= last_step * (1 - tail_fraction)]
    if len(tail) < min_points:
        tail = [loss for _, loss in points[-min_points:]]
    return sum(tail) / len(tail)
