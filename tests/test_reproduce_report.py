"""`dftrain reproduce` report: statistics over seeds, duplicate-aware matching, and the report files,
built from hand-made stage outputs (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dftrain.experiments.config import load_experiment
from dftrain.experiments.plan import Layout, compare_stage
from dftrain.experiments.report import build_report, write_report
from dftrain.experiments.stats import final_loss, mean_std, own_group_match


def test_mean_std_uses_sample_std_and_skips_missing():
    stats = mean_std([1.0, None, 3.0])
    assert stats["n"] == 2 and stats["mean"] == 2.0 and stats["std"] == pytest.approx(2 ** 0.5)
    assert mean_std([5.0])["std"] is None
    assert mean_std([None])["mean"] is None


def test_own_group_match_counts_copies_of_the_own_image():
    groups = {"a1": 0, "a2": 0, "a3": 0, "b": 1, "c": 2, "d": 3}
    matches = [
        {"train_key": "a1", "best_key": "a3"},  # a copy of its own image: a hit
        {"train_key": "b", "best_key": "b"},  # hit
        {"train_key": "c", "best_key": "a1"},  # miss
        {"train_key": None, "best_key": "d"},  # no own key: not counted
    ]
    result = own_group_match(matches, groups)
    assert result["n"] == 3
    assert result["rate"] == pytest.approx(2 / 3)
    assert result["chance"] == pytest.approx((3 / 6 + 1 / 6 + 1 / 6) / 3)


def test_final_loss_averages_the_tail():
    history = [{"step": s, "loss": 1.0 if s < 90 else 0.2} for s in range(10, 101, 10)]
    assert final_loss(history) == pytest.approx((1.0 + 0.2 + 0.2) / 3)  # at least 3 points
    long = [{"step": s, "loss": 1.0 if s <= 900 else 0.1} for s in range(10, 1001, 10)]
    assert final_loss(long) == pytest.approx((1.0 + 0.1 * 10) / 11)  # steps >= 900
    assert final_loss([]) is None


def _fake_run(tmp_path: Path, seeds=(0, 1, 2)) -> tuple:
    """A reproduce folder with real training shards and hand-written stage outputs in which the
    baseline copies its own images and generalized_dual_fusion does not."""
    from dftrain.shards import ShardWriter
    from dftrain.synthetic import synthetic_train_samples

    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({
        "seeds": list(seeds), "variants": ["baseline", "generalized_dual_fusion", "embed_noise"],
        "data": {"n": 30, "size": 16, "dup_fraction": 0.3}, "model": {"resolution": 16},
        "train": {"options": {"steps": 100}}, "generate": {"num_prompts": 6, "per_prompt": 1, "steps": 2}}))
    experiment = load_experiment(exp_file)
    layout = Layout(tmp_path / "out")
    with ShardWriter(layout.train_shards, samples_per_shard=100, kind="train") as writer:
        samples = list(synthetic_train_samples(30, 16, 0.3, 0))
        for sample in samples:
            writer.write(sample)
    with ShardWriter(layout.heldout, samples_per_shard=100, kind="train") as writer:
        for sample in synthetic_train_samples(10, 16, 0.0, 7):
            writer.write(sample)
    group_of = {s["__key__"]: s["json"]["group"] for s in samples}
    keys = sorted(group_of)
    other = {k: next(o for o in keys if group_of[o] != group_of[k]) for k in keys}
    for seed in seeds:
        for variant, copies, sim, fd in (("baseline", True, 0.9, 10.0), ("generalized_dual_fusion", False, 0.5, 12.0),
                                         ("embed_noise", True, 0.88, 10.0)):
            if variant == "embed_noise" and seed == seeds[-1]:
                continue  # one run that did not finish
            folder = layout.evaluation(variant, seed)
            folder.mkdir(parents=True)
            matches = [{"file": f"{k}.png", "train_key": k, "best_key": k if copies else other[k],
                        "best_sim": sim} for k in keys[:6]]
            (folder / "matches.jsonl").write_text("".join(json.dumps(m) + "\n" for m in matches))
            (folder / "report.json").write_text(json.dumps({
                "sim_p95": sim + 0.01 * seed, "sim_mean": sim - 0.1, "frac_above_0_5": 1.0 if copies else 0.1,
                "threshold": 0.7, "own_match_rate": 1.0 if copies else 0.0, "fd_embedded": fd + seed,
                "fid": None, "diversity": 0.1, "bg_sim_p95": 0.95, "n_generations": 6, "descriptor": "embedded"}))
            heldout = layout.heldout_evaluation(variant, seed)
            heldout.mkdir(parents=True)
            (heldout / "report.json").write_text(json.dumps({"sim_p95": 0.6, "fd_embedded": fd + 1.0}))
            run = layout.run(variant, seed)
            run.mkdir(parents=True)
            (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.1 + seed / 100}) + "\n"
                                                       for s in range(10, 101, 10)))
    return experiment, layout


def test_report_summarises_seeds_and_lists_what_is_missing(tmp_path):
    experiment, layout = _fake_run(tmp_path)
    report = build_report(experiment, layout)
    base = report["summary"]["baseline"]
    assert base["sim_p95"]["n"] == 3
    assert base["sim_p95"]["mean"] == pytest.approx(0.91)
    assert base["own_group_match"]["mean"] == 1.0
    method = report["summary"]["generalized_dual_fusion"]
    assert method["own_group_match"]["mean"] == 0.0
    change = report["changes_vs_baseline"]["generalized_dual_fusion"]["sim_p95"]
    expected = sum((0.5 - 0.9) / (0.9 + 0.01 * s) for s in range(3)) / 3 * 100  # same shift on both
    assert change["change_pct"]["mean"] == pytest.approx(expected)
    assert report["missing"] == ["embed_noise_seed2"]
    assert base["heldout_fd"]["mean"] == pytest.approx(11.0) and method["heldout_fd"]["mean"] == pytest.approx(13.0)
    assert report["reference_heldout_fd"] > 0
    assert report["summary"]["embed_noise"]["sim_p95"]["n"] == 2
    assert report["data"]["n_train"] == 30 and report["data"]["unique_images"] < 30
    text = " ".join(report["conclusions"])
    assert "Baseline memorizes clearly" in text
    assert "generalized_dual_fusion: replication score lower" in text
    assert "fits the data distribution worse" in text  # fd_embedded +20%: flagged, not hidden


def test_report_files_have_every_section(tmp_path):
    experiment, layout = _fake_run(tmp_path, seeds=(0, 1))
    md_path = write_report(experiment, layout)
    md = md_path.read_text()
    for heading in ("## Results (mean ± std over seeds)", "## Conclusions", "## Change against the baseline",
                    "## Per seed", "## Setup", "## What this measures"):
        assert heading in md
    assert "43.5%" in md and "embed_noise_seed1" in md  # paper context; the unfinished run is named
    saved = json.loads((layout.out / "report.json").read_text())
    assert saved["paper"]["method_sim_p95_reduction_pct"] == 43.5
    assert {r["variant"] for r in saved["runs"]} == {"baseline", "generalized_dual_fusion", "embed_noise"}


def test_report_without_a_finished_baseline_says_so(tmp_path):
    experiment, layout = _fake_run(tmp_path, seeds=(0,))
    for seed_dir in (layout.out / "eval" / "baseline").iterdir():
        (seed_dir / "report.json").unlink()
    report = build_report(experiment, layout)
    assert report["conclusions"] == ["The baseline did not finish for any seed: nothing can be concluded."]
    assert compare_stage(layout, 0, ["baseline", "generalized_dual_fusion"]) is None


def test_conclusions_tell_broken_caption_link_from_less_copying():
    from dftrain.experiments.report import conclusions, summarise

    runs = []
    for seed in (0, 1, 2):
        runs.append({"variant": "baseline", "seed": seed, "sim_p95": 0.85 + seed / 100, "own_group_match": 0.8,
                     "own_group_chance": 0.05, "frac_above": 0.3, "heldout_fd": 0.5})
        runs.append({"variant": "generalized", "seed": seed, "sim_p95": 0.86 + seed / 100, "own_group_match": 0.06,
                     "own_group_chance": 0.05, "frac_above": 0.3, "heldout_fd": 0.5})
    summary, changes = summarise(runs, ["baseline", "generalized"])
    text = " ".join(conclusions(summary, changes, 3))
    assert "replication score higher than baseline" in text
    assert "the caption-to-image link is broken, the copying itself is not" in text
