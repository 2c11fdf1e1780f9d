"""Experiments on the memorization regime: the data section's regime fields are validated, the data
stage builds what the file says, extra copy descriptors get their own evaluation, and the report's
first sentence is computed from the runs' figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dftrain.errors import ConfigError
from dftrain.experiments.config import load_experiment
from dftrain.experiments.headline import headline
from dftrain.experiments.plan import build_plan
from dftrain.experiments.report import summarise
from dftrain.experiments.stages import run_stage


def _regime(**data) -> dict:
    return {
        "seeds": [0, 1],
        "variants": ["baseline", "generalized_dual_fusion"],
        "data": {"n": 10, "dup_images": 2, "dup_factor": 3, "heldout": 4, "size": 32, "objects_per_class": 1,
                 **data},
        "model": {"source": "tiny", "resolution": 32},
        "train": {"options": {"steps": 10, "micro_batch_size": 2}},
        "generate": {"num_prompts": 4, "per_prompt": 1, "steps": 2},
        "evaluate": {"options": {"descriptor": "sscd"}, "extra_descriptors": ["embedded"]},
    }


def _load(tmp_path: Path, data: dict):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_experiment(path)


def test_regime_fields_are_accepted_and_planned(tmp_path):
    exp = _load(tmp_path, _regime())
    assert exp.regime and exp.has_heldout and exp.extra_descriptors == ["embedded"]
    plan = build_plan(exp, tmp_path / "out")
    assert [s.name for s in plan.setup][:1] == ["data"] and "heldout" not in [s.name for s in plan.setup]
    args = plan.setup[0].args
    for flag, value in (("--n", "10"), ("--dup-images", "2"), ("--dup-factor", "3"), ("--heldout", "4")):
        assert args[args.index(flag) + 1] == value
    assert plan.layout.heldout == tmp_path / "out" / "data" / "heldout"
    names = [s.name for s in plan.chains[0].stages]
    assert names == ["train_baseline_seed0", "generate_baseline_seed0", "evaluate_baseline_seed0",
                     "evaluate_embedded_baseline_seed0", "evaluate_heldout_baseline_seed0"]
    extra = plan.chains[0].stages[3].args
    assert extra[extra.index("--descriptor") + 1] == "embedded" and "--weights" not in extra
    heldout = plan.chains[0].stages[4].args
    assert heldout[heldout.index("--train-shards") + 1] == str(plan.layout.heldout)


def test_no_heldout_scenes_means_no_heldout_evaluation(tmp_path):
    exp = _load(tmp_path, _regime(heldout=0))
    assert not exp.has_heldout
    assert not any(s.name.startswith("evaluate_heldout") for c in build_plan(exp, tmp_path).chains for s in c.stages)


@pytest.mark.parametrize("data, message", [
    ({"dup_images": 11}, r"data.dup_images \(11\) cannot exceed data.n \(10"),
    ({"dup_factor": 1}, "data.dup_factor: must be >= 2"),
    ({"heldout": -1}, "data.heldout: must be >= 0"),
    ({"heldout": True}, "data.heldout: expected an integer"),
    ({"dup_images": 1.5}, "data.dup_images: expected an integer"),
    ({"dup_fraction": 0.5}, "data: unknown key.s. dup_fraction"),
    ({"heldout_seed": 3}, "data: unknown key.s. heldout_seed"),
])
def test_bad_regime_fields_are_refused_one_line_each(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, _regime(**data))
    problems = str(info.value).splitlines()[1:]
    assert len(problems) == 1  # exactly the one problem, on its own line


@pytest.mark.parametrize("extra, message", [
    (["dino"], "'dino' is not one of"), (["sscd"], "'sscd' is already evaluated"), ("embedded", "expected a list")])
def test_bad_extra_descriptors_are_refused(tmp_path, extra, message):
    data = _regime()
    data["evaluate"]["extra_descriptors"] = extra
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, data)


def test_the_regime_data_stage_builds_what_the_file_says(tmp_path):
    from dftrain.shards import iter_samples

    exp = _load(tmp_path, _regime(n=9, dup_images=2, dup_factor=4, heldout=3))
    plan = build_plan(exp, tmp_path / "out")
    run_stage(plan.layout.out, plan.setup[0])
    train = [s["json"] for s in iter_samples(plan.layout.train_shards, decode=False, require=("json",))]
    assert len(train) == 9 - 2 + 2 * 4
    copies: dict = {}
    for meta in train:
        copies[meta["group"]] = copies.get(meta["group"], 0) + 1
    assert sorted(copies.values()) == [1] * 7 + [4, 4] and len(copies) == 9
    assert sum(1 for _ in iter_samples(plan.layout.heldout, decode=False)) == 3
    assert json.loads((plan.layout.objects / "manifest.json").read_text())


def _runs(base_sim: float, method_sim: float, base_frac: float, method_frac: float) -> list[dict]:
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02), (2, -0.01)):
        rows.append({"variant": "baseline", "seed": seed, "sim_p95": base_sim + shift,
                     "frac_above_0_5": base_frac + shift, "dup_frac_above_0_5": 0.9})
        rows.append({"variant": "generalized_dual_fusion", "seed": seed, "sim_p95": method_sim + 2 * shift,
                     "frac_above_0_5": method_frac + shift, "dup_frac_above_0_5": 0.3})
    return rows


def test_the_headline_is_computed_from_the_runs():
    names = ["baseline", "generalized_dual_fusion"]
    summary, changes = summarise(_runs(0.8, 0.4, 0.6, 0.15), names)
    text = headline(summary, changes, "sscd")
    assert text.startswith("The baseline's copying: sim_p95 0.80 (sscd descriptor) with 60% of generations above 0.5 "
                           "(90% for prompts of duplicated images)")
    expected_sim = round(sum((0.4 + 2 * s) / (0.8 + s) - 1 for s in (0.0, 0.02, -0.01)) / 3 * 100)
    assert f"generalized_dual_fusion sim_p95 {expected_sim:+d}% (p " in text
    assert "over 3 seed(s)" in text and text.count(".") >= 1 and "\n" not in text
    # other figures, another sentence: nothing in it is a constant
    other = headline(*summarise(_runs(0.7, 0.7, 0.5, 0.5), names), "sscd")
    assert "sim_p95 0.70" in other and other != text


def test_the_headline_without_a_baseline_says_so():
    summary, changes = summarise([], ["baseline", "generalized_dual_fusion"])
    assert headline(summary, changes, "sscd") == "The baseline did not finish, so no reduction can be measured."
