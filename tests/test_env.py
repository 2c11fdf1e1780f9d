"""`dftrain env` and `dftrain --version`: every component listed, --require gates a job script."""

import json
import subprocess
import sys

import pytest

from dftrain import __version__, env


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dftrain", *args], capture_output=True, text=True, timeout=120)


def test_version_flag():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"dftrain {__version__}"


def test_env_lists_every_component_with_a_status():
    result = run_cli("env", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["name"] for row in rows] == list(env.PROBES)
    assert all(row["status"] in (env.OK, env.MISSING, env.UNUSABLE) for row in rows)
    assert all(row["hint"] for row in rows if row["status"] != env.OK), "what is missing must say how to get it"
    torch_row = next(row for row in rows if row["name"] == "torch")
    import torch

    assert torch_row["status"] == env.OK and torch.__version__ in torch_row["detail"]


def test_require_present_capability_exits_zero():
    result = run_cli("env", "--require", "torch,deepspeed", "--require", "wordnet")
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(env.probe_gpu().ok, reason="this machine has a GPU")
def test_require_missing_gpu_exits_nonzero_with_one_line():
    result = run_cli("env", "--require", "gpu")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: required gpu is missing")
    assert "Traceback" not in result.stderr


def test_unknown_requirement_is_a_clear_error():
    result = run_cli("env", "--require", "quantum")
    assert result.returncode == 1
    assert "unknown capability quantum" in result.stderr and "Traceback" not in result.stderr


def test_gpu_only_packages_are_unusable_without_a_gpu(monkeypatch):
    monkeypatch.setattr(env, "package_version", lambda name: "9.9" if name in ("xformers", "vllm") else None)
    monkeypatch.setattr(env, "probe_gpu", lambda: env.Component("gpu", env.MISSING, "torch is a CPU build", "x"))
    assert env.probe_xformers().status == env.UNUSABLE
    assert env.probe_vllm().status == env.UNUSABLE
    monkeypatch.setattr(env, "probe_gpu", lambda: env.Component("gpu", env.OK, "1 x H200"))
    assert env.probe_xformers().ok and env.probe_vllm().ok


def test_a_failing_probe_does_not_hide_the_others(monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setitem(env.PROBES, "ray", broken)
    rows = {row.name: row for row in env.collect(["ray", "python"])}
    assert rows["ray"].status == env.UNUSABLE and "boom" in rows["ray"].detail
    assert rows["python"].ok
