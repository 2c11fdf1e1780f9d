"""OUT/report.json and OUT/report.md of `dftrain reproduce`, from whatever finished.

Reads each (variant, seed)'s evaluate report.json and matches.jsonl and its training
metrics.jsonl; nothing is recomputed from images. Missing runs are listed, never guessed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dftrain.evaluate.groups import train_groups
from dftrain.experiments.config import Experiment
from dftrain.experiments.headline import headline
from dftrain.experiments.plan import Layout
from dftrain.experiments.stats import final_loss, mean_std, own_group_match, paired_comparison
from dftrain.files import atomic_write_text

PAPER_REDUCTION_PCT = 43.5  # arXiv 2309.07254: replication score reduction on Stable Diffusion 2.1
# metric -> (label, lower is "less copying" / "better fit"?)
METRICS = {
    "sim_p95": "replication score (sim_p95)",
    "frac_above": "fraction above the descriptor's copy threshold",
    "frac_above_0_5": "fraction above 0.5 (the paper's SSCD threshold)",
    "own_group_match": "own-caption match (duplicate-aware)",
    "own_match_rate": "own-caption match (exact key)",
    "final_loss": "final training loss",
    "fd_embedded": "fd_embedded (fit, lower = closer to train)",
    "heldout_fd": "fd to held-out images (fit, lower = better)",
    "heldout_sim_p95": "sim_p95 against held-out images",
    "fid": "FID",
    "diversity": "diversity",
    # the same figures for generations prompted by a duplicated / a unique training image
    "dup_sim_p95": "sim_p95, prompts of duplicated images",
    "dup_frac_above_0_5": "fraction above 0.5, prompts of duplicated images",
    "unique_sim_p95": "sim_p95, prompts of unique images",
    "unique_frac_above_0_5": "fraction above 0.5, prompts of unique images",
    "heldout_fd_descriptor": "fd to held-out images in the copy descriptor's space",
}
SIGNIFICANCE = 0.05


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        continue  # a half-written last line of a killed run
    except OSError:
        return []
    return rows


def dataset_summary(layout: Layout, groups: dict[str, object]) -> dict:
    from dftrain.shards import iter_samples

    sizes: dict[object, int] = {}
    for g in groups.values():
        sizes[g] = sizes.get(g, 0) + 1
    summary = {"n_train": len(groups), "unique_images": len(sizes),
               "duplicated_images": sum(1 for s in sizes.values() if s > 1),
               "max_copies": max(sizes.values(), default=0)}
    captions, general, steps, examples = set(), set(), {}, []
    before, after = [], []
    if (layout.general_shards / "manifest.json").is_file():
        seen = set()
        for sample in iter_samples(layout.general_shards, decode=False, require=("txt",)):
            meta = sample.get("json") or {}
            orig = meta.get("orig_caption", "")
            captions.add(orig)
            general.add(sample["txt"])
            step = str(meta.get("fallback_step") or "llm")
            steps[step] = steps.get(step, 0) + 1
            if isinstance(meta.get("generality_before"), int | float):
                before.append(meta["generality_before"])
            if isinstance(meta.get("generality_after"), int | float):
                after.append(meta["generality_after"])
            if orig not in seen and len(examples) < 6:
                seen.add(orig)
                examples.append({"original": orig, "generalized": sample["txt"]})
        summary["generalized"] = {"unique_original_captions": len(captions), "unique_generalized_captions": len(general),
                                  "by_step": steps, "generality_before": mean_std(before)["mean"],
                                  "generality_after": mean_std(after)["mean"], "examples": examples}
    elif (layout.train_shards / "manifest.json").is_file():
        for sample in iter_samples(layout.train_shards, decode=False, require=("txt",)):
            captions.add(sample["txt"])
    summary["unique_captions"] = len(captions)
    return summary


def extra_metrics(descriptor: str) -> dict[str, str]:
    """The report keys of an extra copy descriptor (evaluate.extra_descriptors)."""
    return {f"{descriptor}_sim_p95": f"sim_p95 ({descriptor} descriptor)",
            f"{descriptor}_frac_above": f"fraction above the {descriptor} descriptor's copy threshold"}


def _split_figures(evaluation: dict) -> dict:
    split = evaluation.get("split") or {}
    out = {}
    for name, prefix in (("duplicated", "dup"), ("unique", "unique")):
        part = split.get(name) or {}
        out[f"{prefix}_sim_p95"] = part.get("sim_p95")
        out[f"{prefix}_frac_above_0_5"] = part.get("frac_above_0_5")
        out[f"{prefix}_n"] = part.get("n")
    return out


def _extra_figures(layout: Layout, variant: str, seed: int, descriptors) -> dict:
    out = {}
    for descriptor in descriptors:
        extra = _read_json(layout.extra_evaluation(descriptor, variant, seed) / "report.json") or {}
        out[f"{descriptor}_sim_p95"] = extra.get("sim_p95")
        out[f"{descriptor}_frac_above"] = extra.get("frac_above_threshold")
        out[f"{descriptor}_threshold"] = extra.get("threshold")
    return out


def collect_run(layout: Layout, variant: str, seed: int, groups: dict[str, object],
                extra_descriptors=()) -> dict | None:
    """The figures of one finished (variant, seed); None when its evaluation did not finish."""
    evaluation = _read_json(layout.evaluation(variant, seed) / "report.json")
    if evaluation is None:
        return None
    matches = _read_jsonl(layout.evaluation(variant, seed) / "matches.jsonl")
    own = own_group_match(matches, groups) if groups else {"rate": None, "chance": None, "n": 0}
    threshold = evaluation.get("threshold")
    sims = [float(m["best_sim"]) for m in matches if isinstance(m.get("best_sim"), int | float)]
    # From the matches, at the descriptor's threshold: the report key frac_above_0_5 has meant either
    # "> 0.5" or "> threshold" in different versions of evaluate.
    frac_above = (sum(s > threshold for s in sims) / len(sims) if sims and threshold is not None
                  else evaluation.get("frac_above_threshold", evaluation.get("frac_above_0_5")))
    heldout = _read_json(layout.heldout_evaluation(variant, seed) / "report.json") or {}
    history = _read_jsonl(layout.run(variant, seed) / "metrics.jsonl")
    marker = _read_json(layout.out / ".stages" / f"train_{variant}_seed{seed}.json") or {}
    return {
        "variant": variant,
        "seed": seed,
        "sim_p95": evaluation.get("sim_p95"),
        "sim_mean": evaluation.get("sim_mean"),
        "frac_above": frac_above,
        "frac_above_0_5": (sum(s > 0.5 for s in sims) / len(sims)) if sims else None,
        "threshold": threshold,
        "own_match_rate": evaluation.get("own_match_rate"),
        "own_group_match": own["rate"],
        "own_group_chance": own["chance"],
        "final_loss": final_loss(history),
        "steps": history[-1].get("step") if history else None,
        "fd_embedded": evaluation.get("fd_embedded"),
        "fid": evaluation.get("fid"),
        "heldout_fd": heldout.get("fd_embedded"),
        "heldout_sim_p95": heldout.get("sim_p95"),
        "heldout_fd_descriptor": heldout.get("fd_descriptor"),
        "diversity": evaluation.get("diversity"),
        **_split_figures(evaluation),
        **_extra_figures(layout, variant, seed, extra_descriptors),
        "bg_sim_p95": evaluation.get("bg_sim_p95"),
        "n_generations": evaluation.get("n_generations"),
        "descriptor": evaluation.get("descriptor"),
        "train_seconds": marker.get("seconds"),
    }


def reference_fd(layout: Layout) -> float | None:
    """fd_embedded of the training images themselves against the held-out images: what a model that
    reproduces its training set exactly would score on the held-out fit measure."""
    from dftrain.evaluate.descriptors import EmbeddedDescriptor
    from dftrain.evaluate.fid import frechet_between
    from dftrain.shards import iter_samples

    if not (layout.heldout / "manifest.json").is_file() or not (layout.train_shards / "manifest.json").is_file():
        return None
    descriptor = EmbeddedDescriptor()
    feats = [descriptor.embed([s["image"] for s in iter_samples(folder, require=("jpg",))])
             for folder in (layout.train_shards, layout.heldout)]
    if min(len(f) for f in feats) < 2:
        return None
    return float(frechet_between(feats[0], feats[1]))


def summarise(runs: list[dict], variants: list[str], metrics: dict[str, str] | None = None) -> tuple[dict, dict]:
    """Per variant: mean/std of every metric; per non-baseline variant: paired change vs baseline."""
    metrics = METRICS if metrics is None else metrics
    summary, changes = {}, {}
    for variant in variants:
        rows = [r for r in runs if r["variant"] == variant]
        summary[variant] = {m: mean_std([r.get(m) for r in rows]) for m in (*metrics, "own_group_chance")}
        summary[variant]["seeds"] = sorted(r["seed"] for r in rows)
    base = {r["seed"]: r for r in runs if r["variant"] == "baseline"}
    for variant in variants:
        if variant == "baseline":
            continue
        rows = {r["seed"]: r for r in runs if r["variant"] == variant}
        changes[variant] = {m: paired_comparison({s: r.get(m) for s, r in base.items()},
                                                 {s: r.get(m) for s, r in rows.items()}) for m in metrics}
    return summary, changes


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(stats: dict, digits: int = 3) -> str:
    if not stats or stats["n"] == 0:
        return "-"
    if stats["std"] is None:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _change(entry: dict) -> str:
    stats = entry["change_pct"]
    if stats["n"] == 0:
        return "-"
    text = f"{stats['mean']:+.1f}%"
    if stats["std"] is not None:
        text += f" ± {stats['std']:.1f}"
    if entry["p_value"] is not None:
        text += f" (p {entry['p_value']:.2f})"
    return text


def conclusions(summary: dict, changes: dict, n_seeds: int) -> list[str]:  # noqa: C901 (predates the complexity rule)
    """Plain statements read off the numbers; they say when a difference is within the seed spread."""
    lines = []
    base = summary.get("baseline")
    if not base or base["sim_p95"]["n"] == 0:
        return ["The baseline did not finish for any seed: nothing can be concluded."]
    own, chance = base["own_group_match"]["mean"], base["own_group_chance"]["mean"]
    if own is not None and chance:
        ratio = own / chance
        verdict = ("memorizes clearly" if own >= 0.25 and ratio >= 3 else
                   "memorizes somewhat" if ratio >= 1.5 else "does not measurably memorize")
        lines.append(f"Baseline {verdict}: {own:.0%} of its generations have (a copy of) their own training image "
                     f"as nearest neighbour, against {chance:.0%} by chance ({ratio:.1f}x); sim_p95 "
                     f"{_pm(base['sim_p95'])}, {_pm(base['frac_above'], 2)} of generations above the copy threshold.")
        if verdict == "does not measurably memorize":
            lines.append("Without memorization in the baseline there is nothing to mitigate: the reductions below "
                         "are not evidence for or against the method.")
    for variant, entry in changes.items():
        if summary[variant]["sim_p95"]["n"] == 0:
            lines.append(f"{variant}: no finished seed.")
            continue
        sim, own_change = entry["sim_p95"], entry["own_group_match"]
        p = sim["p_value"]
        direction = ("lower" if (sim["diff"]["mean"] or 0) < 0 else "higher")
        if p is None:
            strength = "(one seed: no spread to judge it by)" if len(sim["seeds"]) < 2 else ""
        elif p < SIGNIFICANCE:
            strength = f"(consistent over {len(sim['seeds'])} seeds, paired p {p:.2f})"
        else:
            strength = f"(within the seed spread, paired p {p:.2f})"
        text = f"{variant}: replication score {direction} than baseline by {abs(sim['change_pct']['mean'] or 0):.1f}%"
        text += f" {strength}" if strength else ""
        if own_change["diff"]["n"]:
            text += (f"; own-caption match {summary[variant]['own_group_match']['mean']:.0%} vs baseline "
                     f"{summary['baseline']['own_group_match']['mean']:.0%}")
        heldout_fit = entry["heldout_fd"]["change_pct"]["mean"]
        fit = heldout_fit if heldout_fit is not None else entry["fd_embedded"]["change_pct"]["mean"]
        loss = entry["final_loss"]["change_pct"]["mean"]
        fit_text = []
        if heldout_fit is not None:
            fit_text.append(f"fd to held-out images {heldout_fit:+.0f}%")
        if entry["fd_embedded"]["change_pct"]["mean"] is not None:
            fit_text.append(f"fd to training images {entry['fd_embedded']['change_pct']['mean']:+.0f}%")
        if loss is not None:
            fit_text.append(f"final loss {loss:+.0f}%")
        if fit_text:
            text += f"; fit: {', '.join(fit_text)}"
        notes = []
        own_drop = own_change["change_pct"]["mean"]
        if own_drop is not None and own_drop <= -50 and abs(sim["change_pct"]["mean"] or 0) < 10:
            notes.append("it still reproduces training images about as closely, but mostly not the one its caption "
                         "names: the caption-to-image link is broken, the copying itself is not")
        if direction == "lower" and fit is not None and fit > 10:
            notes.append("it also fits the data distribution worse, so part of the drop may be learning less, "
                         "not copying less")
        lines.append(text + (" — " + "; ".join(notes) if notes else "") + ".")
    if n_seeds < 3:
        lines.append(f"Only {n_seeds} seed(s): spreads and p-values are rough.")
    return lines


def build_report(experiment: Experiment, layout: Layout, outcome=None, kind: str = "reproduce") -> dict:
    groups = train_groups(layout.train_shards)
    names = [v.name for v in experiment.variants]
    extras = experiment.extra_descriptors
    metrics = {**METRICS, **{k: v for d in extras for k, v in extra_metrics(d).items()}}
    runs, missing = [], []
    for seed in experiment.seeds:
        for name in names:
            row = collect_run(layout, name, seed, groups, extras)
            if row is None:
                missing.append(f"{name}_seed{seed}")
            else:
                runs.append(row)
    summary, changes = summarise(runs, names, metrics)
    return {
        "kind": kind,
        "experiment": experiment.name,
        "profile": experiment.profile,
        "config_file": experiment.source,
        "seeds": experiment.seeds,
        "variants": {v.name: {"captions": v.captions, "fusion": v.fusion, "train": v.train,
                              "description": v.description} for v in experiment.variants},
        "budget": {"steps": experiment.train["options"].get("steps"),
                   "micro_batch_size": experiment.train["options"].get("micro_batch_size"),
                   "ranks": experiment.train.get("ranks", 1), **{f"generate_{k}": v for k, v in
                                                                  experiment.generate.items() if k != "options"}},
        "data": dataset_summary(layout, groups) if groups else {},
        "reference_heldout_fd": reference_fd(layout),
        "runs": runs,
        "missing": missing,
        "failed": dict(outcome.failed) if outcome else {},
        "summary": summary,
        "changes_vs_baseline": changes,
        "headline": headline(summary, changes, runs[0]["descriptor"] if runs else None),
        "extra_descriptors": extras,
        "conclusions": conclusions(summary, changes, len({r["seed"] for r in runs})),
        "paper": {"method_sim_p95_reduction_pct": PAPER_REDUCTION_PCT, "model": "Stable Diffusion 2.1",
                  "source": "arXiv 2309.07254"},
        "config": experiment.raw,
    }


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _results_section(report: dict, names: list[str]) -> list[str]:
    """The copying table (all, duplicated, unique prompts) and the fit table, over seeds."""
    s = report["summary"]
    lines: list[str] = []
    lines += ["## Results (mean ± std over seeds)", ""]
    descriptor = report["runs"][0]["descriptor"] if report["runs"] else "-"
    lines += [f"Copying, {descriptor} descriptor (per generation: best similarity to any training image), for all "
              "prompts and split by prompts of duplicated / unique training images:", ""]
    lines += ["| variant | seeds | sim_p95 ↓ | frac > 0.5 ↓ | dup sim_p95 | dup frac > 0.5 | unique sim_p95 | "
              "unique frac > 0.5 | own match (dup-aware) ↓ | sim_p95 vs baseline | frac > 0.5 vs baseline |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        row = s[name]
        change = report["changes_vs_baseline"].get(name)
        lines.append(f"| {name} | {row['sim_p95']['n']} | {_pm(row['sim_p95'])} | {_pm(row['frac_above_0_5'], 2)} | "
                     f"{_pm(row['dup_sim_p95'])} | {_pm(row['dup_frac_above_0_5'], 2)} | "
                     f"{_pm(row['unique_sim_p95'])} | {_pm(row['unique_frac_above_0_5'], 2)} | "
                     f"{_pm(row['own_group_match'], 2)} | "
                     f"{_change(change['sim_p95']) if change else 'reference'} | "
                     f"{_change(change['frac_above_0_5']) if change else 'reference'} |")
    lines += ["", "Fit and the other figures:", ""]
    extras = report.get("extra_descriptors", [])
    extra_heads = "".join(f" {d} sim_p95 | {d} frac > thr |" for d in extras)
    lines += ["| variant | frac > thr | own match (exact) | final loss | fd held-out | fd held-out "
              f"({descriptor}) | fd train | sim_p95 held-out | diversity |{extra_heads}",
              "|---|---|---|---|---|---|---|---|---|" + "---|" * (2 * len(extras))]
    for name in names:
        row = s[name]
        extra_cells = "".join(f" {_pm(row[f'{d}_sim_p95'])} | {_pm(row[f'{d}_frac_above'], 2)} |" for d in extras)
        lines.append(f"| {name} | {_pm(row['frac_above'], 2)} | {_pm(row['own_match_rate'], 2)} | "
                     f"{_pm(row['final_loss'], 4)} | {_pm(row['heldout_fd'], 2)} | "
                     f"{_pm(row['heldout_fd_descriptor'], 3)} | {_pm(row['fd_embedded'], 2)} | "
                     f"{_pm(row['heldout_sim_p95'])} | {_pm(row['diversity'], 3)} |{extra_cells}")
    chance = s.get("baseline", {}).get("own_group_chance", {}).get("mean")
    lines += ["", f"Chance level of the duplicate-aware own match: {_fmt(chance, 3)}. "
              f"Copy threshold (frac > thr): {_fmt(report['runs'][0]['threshold'], 2) if report['runs'] else '-'} "
              f"({report['runs'][0]['descriptor'] if report['runs'] else '-'} descriptor). "
              f"Paper, for context: {report['paper']['method_sim_p95_reduction_pct']}% lower replication score "
              f"with generalized captions + dual fusion on {report['paper']['model']}. "
              f"Reference: fd held-out of the {report['data'].get('n_train', '-')} training images themselves "
              f"{_fmt(report.get('reference_heldout_fd'), 2)} (duplicates included; Fréchet distances at this "
              "sample size depend on the number and spread of the images, so compare variants with each other, "
              "not with this line).", ""]

    return lines


def _changes_section(report: dict) -> list[str]:
    """The paired changes against the baseline."""
    extras = report.get("extra_descriptors", [])
    lines: list[str] = []
    lines += ["## Change against the baseline, paired by seed", "",
              "| variant | sim_p95 | frac > 0.5 | dup sim_p95 | dup frac > 0.5 | frac > thr | own match (dup-aware) | "
              "final loss | fd held-out | fd train | diversity |"
              + "".join(f" {d} sim_p95 | {d} frac > thr |" for d in extras),
              "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * (2 * len(extras))]
    for name, change in report["changes_vs_baseline"].items():
        extra_cells = "".join(f" {_change(change[f'{d}_sim_p95'])} | {_change(change[f'{d}_frac_above'])} |"
                              for d in extras)
        lines.append(f"| {name} | {_change(change['sim_p95'])} | {_change(change['frac_above_0_5'])} | "
                     f"{_change(change['dup_sim_p95'])} | {_change(change['dup_frac_above_0_5'])} | "
                     f"{_change(change['frac_above'])} | "
                     f"{_change(change['own_group_match'])} | {_change(change['final_loss'])} | "
                     f"{_change(change['heldout_fd'])} | {_change(change['fd_embedded'])} | "
                     f"{_change(change['diversity'])} |{extra_cells}")
    lines += ["", "Relative change in % (mean ± std over seeds; p: paired t-test over seeds, two-sided). "
              "Negative = lower than the baseline of the same seed.", ""]

    return lines


def _per_seed_section(report: dict, names: list[str]) -> list[str]:
    """One row per (variant, seed), and what did not finish."""
    lines: list[str] = []
    lines += ["## Per seed", "",
              "| variant | seed | sim_p95 | frac > thr | frac > 0.5 | own match (dup-aware) | own match (exact) | "
              "final loss | fd held-out | fd train | sim_p95 held-out | train s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(report["runs"], key=lambda r: (names.index(r["variant"]), r["seed"])):
        lines.append(f"| {r['variant']} | {r['seed']} | {_fmt(r['sim_p95'])} | {_fmt(r['frac_above'], 2)} | "
                     f"{_fmt(r['frac_above_0_5'], 2)} | "
                     f"{_fmt(r['own_group_match'], 2)} | {_fmt(r['own_match_rate'], 2)} | {_fmt(r['final_loss'], 4)} | "
                     f"{_fmt(r['heldout_fd'], 2)} | {_fmt(r['fd_embedded'], 2)} | {_fmt(r['heldout_sim_p95'])} | "
                     f"{_fmt(r['train_seconds'], 0)} |")
    if report["missing"]:
        lines += ["", f"Did not finish: {', '.join(report['missing'])}."]
    if report["failed"]:
        lines += ["", "Failed: " + "; ".join(f"{k}: {v}" for k, v in report["failed"].items())]
    lines.append("")

    return lines


def _setup_section(report: dict) -> list[str]:
    """Data, generalized captions, budget, variants and seeds."""
    data, budget = report["data"], report["budget"]
    lines: list[str] = []
    lines += ["## Setup", ""]
    if data:
        lines.append(f"- Data: {data['n_train']} training images, {data['unique_images']} unique "
                     f"({data['duplicated_images']} duplicated, up to {data['max_copies']} copies), "
                     f"{data.get('unique_captions', '-')} distinct captions; synthetic, deterministic.")
        gen = data.get("generalized")
        if gen:
            how = ", ".join(f"{k} {v}" for k, v in sorted(gen["by_step"].items()))
            score = (f", mean generality score {gen['generality_before']:.1f} -> {gen['generality_after']:.1f} (0-10)"
                     if gen["generality_before"] is not None and gen["generality_after"] is not None else "")
            lines.append(f"- Generalized captions: {gen['unique_original_captions']} distinct original captions -> "
                         f"{gen['unique_generalized_captions']} distinct generalized ones (by step: {how}){score}. "
                         "Examples:")
            lines += [f"  - \"{e['original']}\" -> \"{e['generalized']}\"" for e in gen["examples"]]
    lines.append(f"- Budget, the same for every variant: {budget.get('steps')} steps, micro-batch "
                 f"{budget.get('micro_batch_size')} on {budget.get('ranks')} rank(s); generation: "
                 f"{budget.get('generate_num_prompts')} original captions x {budget.get('generate_per_prompt')} images, "
                 f"{budget.get('generate_steps')} sampling steps, guidance {budget.get('generate_guidance')}.")
    lines.append("- Variants:")
    lines += [f"  - {name}: {v['captions']} captions, fusion {v['fusion']}"
              + (f", {', '.join(f'{k}={val}' for k, val in v['train'].items())}" if v["train"] else "")
              + (f" — {v['description']}" if v["description"] else "") for name, v in report["variants"].items()]
    lines.append(f"- Seeds {', '.join(map(str, report['seeds']))}: each seed changes the training noise, data order, "
                 "fusion draws and the generation noise; the data, the initial weights and the generalized captions "
                 "are shared by all seeds.")
    lines.append("")

    return lines


def render_markdown(report: dict, layout: Layout) -> str:
    names = list(report["variants"])
    lines = [f"# dftrain {report.get('kind', 'reproduce')}: {report['experiment']} (profile {report['profile']})", ""]
    lines += [report["headline"], ""]
    lines += ["Does training with generalized captions and dual fusion copy training images less than the "
              "baseline, at the same training budget, over several seeds? And does it still learn the data?", ""]

    lines += _results_section(report, names)
    lines += ["## Conclusions", ""] + [f"- {c}" for c in report["conclusions"]] + [""]

    lines += _changes_section(report)
    lines += _per_seed_section(report, names)
    lines += _setup_section(report)
    lines += ["## What this measures", "",
              "- **sim_p95** (the replication score of the prior study and the paper): for every generation, the "
              "highest cosine similarity of its copy-detection descriptor to any training image; the 95th "
              "percentile over generations. Higher = the most copied generations are closer copies.",
              "- **frac > thr**: fraction of generations whose best similarity exceeds the descriptor's copy "
              "threshold (0.7 for the embedded descriptor, measured on planted copies); **frac > 0.5**: the same "
              "at 0.5, the paper's threshold for SSCD (not calibrated for the embedded descriptor).",
              "- **own match (dup-aware)**: fraction of generations whose nearest training image is (a copy of) the "
              "image of the caption that prompted them. This is the direct sign of memorization: the caption "
              "recalls its own image. Prompts are the ORIGINAL training captions for every variant. "
              "The exact-key version from `dftrain evaluate` undercounts here, because the nearest neighbour is "
              "an arbitrary one among identical copies.",
              "- Fit, so that \"copies less\" cannot hide \"learned less\": **fd held-out** is the Fréchet "
              "distance (embedded descriptor space) between the generations and held-out images drawn from the same "
              "synthetic distribution with another seed, never trained on. It does not reward copying and rises "
              "when a model produces worse images. **fd train** is the same against the training images; copying lowers it, so it "
              "favours the memorizing baseline. **final loss** is the mean training loss over the last 10% of "
              "steps; it is not fully comparable between variants (fusion variants are trained on fused targets, "
              "generalized ones on other captions). **sim_p95 held-out** is the replication score against the "
              "unseen images: the similarity a model reaches by learning the distribution without copying.",
              "- The descriptor is the weight-free embedded one unless the experiment file sets another "
              "(`evaluate.options.descriptor: sscd` with weights on a real run); its similarities are not SSCD's "
              "and the absolute numbers are not comparable with the paper's, only the relative change is.",
              "- Scale: a ~1M-parameter model from scratch on a few dozen synthetic images is a mechanism check, "
              "not a replication of the paper's Stable Diffusion 2.1 fine-tuning on LAION.", ""]

    lines += side_by_side_grids(report, layout)
    pictures = []
    for name in names:
        for seed in report["seeds"][:1]:
            folder = layout.evaluation(name, seed)
            pictures += [(name, seed, png) for png in sorted(folder.glob("*.png"))]
    if pictures:
        lines += ["## Pictures (first seed)", ""]
        for name, seed, png in pictures:
            lines.append(f"### {name}, seed {seed}: {png.stem.replace('_', ' ')}\n\n"
                         f"![{name} {png.stem}]({_rel(png, layout.out)})\n")
    return "\n".join(lines) + "\n"


SIDE_BY_SIDE = ("baseline", "dual_fusion", "generalized_dual_fusion")


def side_by_side_grids(report: dict, layout: Layout) -> list[str]:
    """The most-copied generations (with their nearest training images) of the baseline and the dual
    fusion variants of the first seed, next to each other (the grids `dftrain evaluate` drew)."""
    from dftrain.evaluate.report import GRID_PNG

    seed = report["seeds"][0] if report["seeds"] else None
    shown = [(name, layout.evaluation(name, seed) / GRID_PNG) for name in SIDE_BY_SIDE
             if name in report["variants"] and seed is not None]
    shown = [(name, png) for name, png in shown if png.is_file()]
    if len(shown) < 2:
        return []
    return [f"## Most-copied generations, side by side (seed {seed})", "",
            "Each grid: a variant's generations with the highest similarity to a training image (left) and that "
            "training image (right), most similar first.", "",
            "| " + " | ".join(name for name, _ in shown) + " |", "|" + "---|" * len(shown),
            "| " + " | ".join(f"![{name}]({_rel(png, layout.out)})" for name, png in shown) + " |", ""]


def write_report(experiment: Experiment, layout: Layout, outcome=None, kind: str = "reproduce") -> Path:
    report = build_report(experiment, layout, outcome, kind)
    layout.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = layout.out / "report.json", layout.out / "report.md"
    for path, text in ((json_path, json.dumps(report, indent=2, default=str) + "\n"),
                       (md_path, render_markdown(report, layout))):
        atomic_write_text(path, text)
    return md_path
