"""`dftrain generalize` options: one typed definition (GeneralizeOptions) for the CLI and experiment files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dftrain.errors import ConfigError
from dftrain.generalize.options import GeneralizeOptions, build_generalize_options, validate
from dftrain.options import check_values

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_flags_build_the_same_model():
    opts = build_generalize_options({"shards": "in", "out": "out", "max_words": "3"})
    assert (opts.backend, opts.max_words, opts.batch_size, opts.faithful, opts.score) == ("embedded", 3, None,
                                                                                         True, "auto")
    validate(opts)


@pytest.mark.parametrize("given, message", [
    ({"rounds": -1}, "--rounds: Input should be greater than or equal to 0, got -1"),
    ({"target_generality": float("nan")}, "--target-generality: Input should be a finite number"),
    ({"backend": "gpt"}, "--backend: Input should be 'embedded', 'transformers' or 'vllm'"),
    ({"dtype": "int8"}, "--dtype: Input should be"),
    ({"batch_size": 0}, "--batch-size: Input should be greater than or equal to 1"),
])
def test_bad_values_are_one_line_errors(given, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_generalize_options({"shards": "in", "out": "out", **given})


def test_cross_field_checks_are_listed_together():
    with pytest.raises(ConfigError) as info:
        validate(build_generalize_options({"fallback": "bogus"}))
    assert str(info.value) == ("--shards is required; --out is required; unknown --fallback step(s) ['bogus']; "
                               "use retry, rule, original, drop")


def test_experiment_file_values_use_the_same_model():
    assert check_values(GeneralizeOptions, {"max_words": 3, "faithful": False}, "generalize.options") == []
    assert check_values(GeneralizeOptions, {"max_words": "x"}, "generalize.options") == [
        "generalize.options.max_words: Input should be a valid integer, unable to parse string as an integer, "
        "got 'x'"]


def test_cli_refuses_a_bad_option_in_one_line_before_loading(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dftrain", "generalize", "--shards", str(tmp_path), "--out",
                           str(tmp_path / "out"), "--rounds", "-1"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: --rounds: Input should be greater than or equal to 0, got -1"
    assert not (tmp_path / "out").exists()
