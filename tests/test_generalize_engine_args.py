"""--engine-arg KEY=VALUE: parsed, checked against vLLM's LLM signature (read from source), passed to vllm.LLM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from generalize_helpers import make_fake_vllm, write_input_shards

from dftrain.errors import ConfigError
from dftrain.generalize.engine_args import parse_engine_args, vllm_engine_keys
from dftrain.generalize.options import build_generalize_options
from dftrain.generalize.receipts import RECEIPT_DIR
from dftrain.generalize.stage import run_from_options

REPO = Path(__file__).resolve().parents[1]


def test_values_are_json_when_they_parse_else_strings():
    assert parse_engine_args(["gpu_memory_utilization=0.85", "max-model-len=1024", "enable_prefix_caching=true",
                              "quantization=fp8", "hf_overrides={\"a\": 1}", "tokenizer_mode=auto"], known=None) == {
        "gpu_memory_utilization": 0.85, "max_model_len": 1024, "enable_prefix_caching": True, "quantization": "fp8",
        "hf_overrides": {"a": 1}, "tokenizer_mode": "auto"}


@pytest.mark.parametrize("item, message", [
    ("gpu_memory_utilization", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("dtype=half", "use --dtype instead"),
    ("tensor_parallel_size=2", "use --tensor-parallel-size instead"),
    ("max_modle_len=1024", "max_modle_len: not an argument of vllm.LLM"),
])
def test_a_bad_engine_arg_is_one_line(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_engine_args([item], known={"gpu_memory_utilization", "max_model_len"})
    with pytest.raises(ConfigError, match="given twice"):
        parse_engine_args(["max_model_len=1", "max_model_len=2"], known=None)


def test_known_keys_are_read_from_vllm_source_without_importing_it(tmp_path):
    root = tmp_path / "vllm"
    (root / "entrypoints").mkdir(parents=True)
    (root / "engine").mkdir()
    (root / "__init__.py").write_text("raise ImportError('importing vllm here would be a bug')\n")
    (root / "entrypoints" / "llm.py").write_text(
        "class LLM:\n    def __init__(self, model, *, gpu_memory_utilization=0.9, seed=0, **kwargs):\n        pass\n")
    (root / "engine" / "arg_utils.py").write_text(
        "from dataclasses import dataclass\n@dataclass\nclass EngineArgs:\n    model: str = ''\n"
        "    max_model_len: int | None = None\n    enable_prefix_caching: bool | None = None\n")
    assert vllm_engine_keys(root) == {"model", "gpu_memory_utilization", "seed", "max_model_len",
                                      "enable_prefix_caching"}
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ConfigError, match="quantisation: not an argument"):
            parse_engine_args(["quantisation=fp8"])
        assert parse_engine_args(["max_model_len=64"]) == {"max_model_len": 64}
    finally:
        sys.path.remove(str(tmp_path))
    assert vllm_engine_keys(tmp_path / "elsewhere") is None  # another layout: the form is checked only


def test_engine_args_reach_vllm_and_the_whole_part_goes_in_one_call(monkeypatch, tmp_path):
    fake = make_fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr("dftrain.llm.backends._cuda_available", lambda: True)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    captions = [[f"a red car number {i} in Paris" for i in range(40)] + ["a dog", "a dog"]]
    in_dir = write_input_shards(tmp_path / "in", captions)
    opts = build_generalize_options({
        "shards": str(in_dir), "out": str(tmp_path / "out"), "backend": "vllm", "model": str(model),
        "engine_arg": ["gpu_memory_utilization=0.5", "max_model_len=256", "enable_prefix_caching=true",
                       "quantization=fp8"], "score": "off", "faithful": False, "progress": False,
        "dedup_parts": 1})
    report = run_from_options(opts)
    assert report.manifest_written
    (llm,) = fake.created
    assert llm.kwargs == {"gpu_memory_utilization": 0.5, "max_model_len": 256, "enable_prefix_caching": True,
                          "quantization": "fp8"}
    kind, conversations, _ = llm.calls[0]
    assert kind == "chat" and len(conversations) == 41  # every unique caption of the part, one call
    receipt = json.loads((tmp_path / "out" / RECEIPT_DIR / "shard-000000.tar.json").read_text())
    # What changes the text is in the work key; memory tuning is not (it reuses finished work).
    assert receipt["settings"]["engine"] == {"dtype": "auto", "max_model_len": 256, "quantization": "fp8"}


def test_cli_refuses_a_bad_engine_arg_before_loading(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dftrain", "generalize", "--shards", str(tmp_path), "--out",
                           str(tmp_path / "out"), "--backend", "vllm", "--engine-arg", "gpu_memory_utilization"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: --engine-arg 'gpu_memory_utilization': expected KEY=VALUE, "
                                   "e.g. gpu_memory_utilization=0.85")
    assert not (tmp_path / "out").exists()
