"""`dftrain reproduce` end to end at minimal size: every stage as its own process, one seed, two
variants (baseline and generalized captions + dual fusion) side by side, then a re-run that
reuses every stage. About 2 minutes on 2 shared cores (model build, LLM load, two trainings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from process_helpers import run_group

REPO = Path(__file__).resolve().parents[1]

TINY_EXPERIMENT = {
    "name": "ci",
    "seeds": [0],
    "variants": ["baseline", "generalized_dual_fusion"],
    "data": {"n": 8, "size": 32, "dup_fraction": 0.5, "objects_per_class": 1},
    "model": {"source": "tiny", "resolution": 32, "vae_steps": 2},
    "generalize": {"backend": "embedded", "options": {"score": "off"}},
    "train": {"ranks": 1, "deepspeed": "ds_configs/zero2.json",
              "options": {"steps": 3, "micro_batch_size": 2, "lr": 1e-3, "warmup_steps": 0, "precision": "fp32",
                          "checkpoint_every": 3, "log_every": 1, "progress": False}},
    "generate": {"num_prompts": 2, "per_prompt": 2, "steps": 2, "guidance": 2.0},
    "evaluate": {"options": {"descriptor": "embedded", "no_cache": True}},
    "run": {"parallel": 2, "threads_per_job": 1},
}


def _reproduce(exp: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return run_group([sys.executable, "-m", "dftrain", "reproduce", "--config", str(exp), "--out", str(out)],
                     cwd=REPO, env=env, timeout=900)


@pytest.mark.multiproc
@pytest.mark.timeout(1500)
def test_reproduce_end_to_end_and_resume(tmp_path):
    exp = tmp_path / "ci.yaml"
    exp.write_text(yaml.safe_dump(TINY_EXPERIMENT))
    out = tmp_path / "run"
    first = _reproduce(exp, out)
    assert first.returncode == 0, first.stderr[-3000:] + "\n" + first.stdout[-2000:]

    report = json.loads((out / "report.json").read_text())
    assert {(r["variant"], r["seed"]) for r in report["runs"]} == {("baseline", 0), ("generalized_dual_fusion", 0)}
    assert report["missing"] == [] and report["failed"] == {}
    for row in report["runs"]:
        assert 0.0 <= row["sim_p95"] <= 1.0 + 1e-6
        assert row["own_group_match"] is not None and row["final_loss"] is not None
        assert row["n_generations"] == 4
    assert report["data"]["generalized"]["unique_generalized_captions"] >= 1
    md = (out / "report.md").read_text()
    for heading in ("## Results (mean ± std over seeds)", "## Conclusions", "## Per seed", "## What this measures"):
        assert heading in md
    assert (out / "compare" / "seed0" / "compare.md").is_file()
    # generations were prompted with the original captions, not the generalized ones
    prompts = [json.loads(line)["prompt"] for line in
               (out / "generations" / "generalized_dual_fusion" / "seed0" / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 4
    assert all(len(p.split()) > 4 for p in prompts), prompts  # specific captions, not <5-word general ones

    again = _reproduce(exp, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "ran 0 stages" in again.stderr, again.stderr[-2000:]
