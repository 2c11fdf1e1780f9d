"""`dftrain demo`: the packaged demo experiment is a smaller memorization regime run by the same runner
as `dftrain reproduce`; at minimal size every stage runs as a subprocess, the report opens with the
measured sentence, and a re-run reuses what finished."""

import json
import sys

import pytest
from process_helpers import run_group

from dftrain.errors import ConfigError
from dftrain.experiments.demo import DEMO_FILE, load_demo
from dftrain.experiments.plan import build_plan
from dftrain.experiments.stages import Stage, is_done, run_stage


@pytest.mark.parametrize("profile", ["default", "ci"])
def test_demo_profiles_are_the_regime_through_the_experiment_runner(tmp_path, profile):
    experiment = load_demo(profile)
    assert experiment.regime and experiment.has_heldout
    assert experiment.variants[0].name == "baseline"
    assert any(v.name == "generalized_dual_fusion" for v in experiment.variants)
    plan = build_plan(experiment, tmp_path)
    names = [s.name for s in plan.setup]
    assert names == ["data", "model", "generalize"]
    data = plan.setup[0].args
    assert data[data.index("--dup-images") + 1] == str(experiment.data["dup_images"])
    for chain in plan.chains:
        stages = [s.name.split("_")[0] for s in chain.stages]
        assert stages[:3] == ["train", "generate", "evaluate"]
        generate = next(s for s in chain.stages if s.name.startswith("generate_"))
        # generations are prompted with the ORIGINAL training captions, never the generalized ones
        assert generate.args[generate.args.index("--shards") + 1] == str(tmp_path / "data" / "train")
    if profile == "default":
        assert experiment.evaluate["options"]["descriptor"] == "sscd"
        assert experiment.extra_descriptors == ["embedded"]


def test_demo_ranks_and_deepspeed_override_the_file(tmp_path):
    experiment = load_demo("ci", ranks=2, deepspeed=str(tmp_path / "ds.json"))
    train = [s for c in build_plan(experiment, tmp_path).chains for s in c.stages if s.name.startswith("train_")]
    assert train and all(s.ranks == 2 for s in train)
    assert all(s.args[s.args.index("--deepspeed") + 1] == str(tmp_path / "ds.json") for s in train)


def test_bad_profile_and_ranks_are_refused():
    with pytest.raises(ConfigError, match="demo: .*unknown profile 'huge'"):
        load_demo("huge")
    with pytest.raises(ConfigError, match="ranks"):
        load_demo("ci", ranks=0)
    assert DEMO_FILE.is_file() and DEMO_FILE.parent.name == "experiments"  # shipped inside the package


def test_failed_stage_reports_its_log_and_is_not_marked_done(tmp_path):
    from dftrain.errors import DftrainError

    stage = Stage("broken", ["shard", "validate", str(tmp_path / "missing")], [tmp_path / "never"])
    with pytest.raises(DftrainError, match="stage 'broken' failed"):
        run_stage(tmp_path, stage)
    assert (tmp_path / "logs" / "broken.log").exists()
    assert not is_done(tmp_path, stage)


@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.timeout(1500)
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "dftrain", "demo", "--profile", "ci", "--out", str(out)]
    first = run_group(cmd, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert md.splitlines()[2] == report["headline"] and report["headline"].startswith("The baseline's copying")
    ci = load_demo("ci")
    for variant in (v.name for v in ci.variants):
        assert f"| {variant} |" in md
        metrics = json.loads((out / "eval" / variant / "seed0" / "report.json").read_text())
        assert metrics["n_generations"] == ci.generate["num_prompts"] * ci.generate["per_prompt"]
        assert metrics["split"]["duplicated"]["n"] + metrics["split"]["unique"]["n"] == metrics["n_generations"]
    assert report["missing"] == [] and report["failed"] == {}

    again = run_group(cmd, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    plan = build_plan(ci, out)
    n_stages = len(plan.setup) + sum(len(c.stages) for c in plan.chains) + len(ci.seeds)  # + compare per seed
    assert sum(1 for line in again.stderr.splitlines() if line.endswith(": reused")) == n_stages
