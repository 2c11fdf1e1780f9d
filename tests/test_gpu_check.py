"""benchmarks/gpu_check.py runs the real `dftrain train`: its CPU form (--tiny) end to end."""

from __future__ import annotations

import json
import sys

from process_helpers import run_group
from train_helpers import REPO, cpu_env


def test_gpu_check_tiny_runs_dftrain_train_per_mode_and_reports_figures(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = run_group([sys.executable, "-m", "benchmarks.gpu_check", "--tiny", "--steps", "2",
                        "--work", str(tmp_path / "work"), "--out", str(out)], env=cpu_env(), cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    for mode in ("sdpa_onthefly", "sdpa_precomputed"):
        figures = report["modes"][mode]
        assert figures["samples_per_s"] > 0 and figures["peak_memory_gib_max_rank"] > 0, figures
        assert (tmp_path / "work" / "runs" / mode / "metrics.jsonl").is_file()  # written by dftrain train
    assert "skipped" in report["modes"]["xformers_onthefly"]  # no CUDA here
    assert report["precomputed_vs_onthefly"] > 0
