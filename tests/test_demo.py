"""`dftrain demo` at minimal size: every stage runs as a subprocess, the report has every section,
and a re-run reuses what finished."""

import json
import sys

import pytest
from process_helpers import run_group

from dftrain.errors import ConfigError
from dftrain.experiments.demo import PROFILES, VARIANTS, build_stages
from dftrain.experiments.stages import Stage, is_done, run_stage


def test_stage_plan_covers_the_whole_method(tmp_path):
    names = [s.name for s in build_stages(tmp_path, profile="ci")]
    assert names[:5] == ["data", "model", "generalize", "score_original", "score_generalized"]
    for variant in VARIANTS:
        assert names.index(f"train_{variant}") < names.index(f"generate_{variant}") < names.index(f"evaluate_{variant}")
    assert names[-1] == "compare"
    train_stages = [s for s in build_stages(tmp_path, profile="ci", ranks=2) if s.name.startswith("train_")]
    assert all(s.ranks == 2 for s in train_stages)
    # generations are prompted with the ORIGINAL training captions, never the generalized ones
    for stage in build_stages(tmp_path, profile="ci"):
        if stage.name.startswith("generate_"):
            assert stage.args[stage.args.index("--shards") + 1] == str(tmp_path / "data" / "train")


def test_bad_profile_and_ranks_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown demo profile"):
        build_stages(tmp_path, profile="huge")
    with pytest.raises(ConfigError, match="ranks"):
        build_stages(tmp_path, ranks=0)
    assert set(PROFILES) >= {"default", "ci"}


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
    cmd = [sys.executable, "-m", "dftrain", "demo", "--profile", "ci", "--out", str(out), "--ranks", "2"]
    first = run_group(cmd, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]

    report = (out / "report.md").read_text()
    for section in ("## Caption generality", "## Caption examples", "## Replication and quality", "## Pictures"):
        assert section in report
    for variant in VARIANTS:
        assert f"| {variant} |" in report
        metrics = json.loads((out / "eval" / variant / "report.json").read_text())
        assert metrics["n_generations"] == PROFILES["ci"].num_prompts * PROFILES["ci"].per_prompt
        assert 0.0 <= metrics["frac_above_0_5"] <= 1.0
        assert (out / "pictures" / f"{variant}_most_copied.png").exists()
    # the generalized captions score as more general than the originals
    rows = report.split("## Caption generality")[1].split("##")[0]
    means = {line.split("|")[1].strip(): float(line.split("|")[3]) for line in rows.splitlines()
             if line.startswith("| original") or line.startswith("| generalized")}
    assert means["generalized"] > means["original"]

    again = run_group(cmd, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    reused_lines = [line for line in again.stderr.splitlines() if ": reused (finished earlier" in line]
    assert len(reused_lines) == len(build_stages(out, profile="ci"))
