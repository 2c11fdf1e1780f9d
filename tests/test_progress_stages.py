"""Long stages in a batch job (stdout redirected to a file): periodic plain progress lines with the
rate and ETA, and no bar escape codes. Train as a real process with `> file`; generalize and
evaluate through the CLI in this process, with sys.stdout a file."""

import json
import re
import subprocess
import sys

import pytest
from evaluate_helpers import planted_set
from generalize_helpers import build_tiny_lm, write_input_shards
from process_helpers import run_group
from train_helpers import REPO, cpu_env, read_metrics, shared_assets

import dftrain.progress
from dftrain.cli import app

LINE = r"^{label}: (\d+)/{total} {unit} \(\d+%\), [\d.]+ {unit}/s, elapsed \S+, ETA \S+"


def progress_lines(text: str, label: str, total: int, unit: str) -> list[str]:
    pattern = re.compile(LINE.format(label=re.escape(label), total=total, unit=unit))
    return [line for line in text.splitlines() if pattern.match(line)]


def assert_plain(text: str) -> None:
    assert "\x1b" not in text and "━" not in text, "a bar's escape codes / glyphs in a redirected log"


def run_cli_to_file(args: list[str], path, monkeypatch) -> str:
    with open(path, "w", encoding="utf-8") as out:
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(dftrain.progress, "_interval", dftrain.progress.default_interval())  # undone below
        app(args, prog_name="dftrain", standalone_mode=False)
    monkeypatch.undo()
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def test_train_redirected_to_a_file_logs_steps_rate_eta_and_loss(assets, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    cmd = [sys.executable, "-m", "dftrain", "train", "--model", str(assets["model"]), "--shards",
           str(assets["shards"]), "--objects", str(assets["objects"]), "--out", str(run_dir), "--steps", "5",
           "--micro-batch-size", "2", "--lr", "1e-3", "--warmup-steps", "0", "--precision", "fp32",
           "--checkpoint-every", "100", "--log-every", "1", "--shuffle-buffer", "4", "--no-export",
           "--log-interval", "0.01"]
    with log.open("w") as out:
        done = run_group(cmd, timeout=240, capture_output=False, stdout=out, stderr=subprocess.PIPE,
                         env=cpu_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    text = log.read_text()
    assert_plain(text)
    lines = progress_lines(text, "train", 5, "steps")
    assert len(lines) >= 3, text  # a step takes longer than 0.01 s: about one line per step, and the last
    assert all(re.search(r", loss [\d.]+$", line) for line in lines)
    steps = [int(re.match(r"train: (\d+)/", line)[1]) for line in lines]
    assert steps == sorted(steps) and steps[-1] == 5
    # the JSON-lines metrics are as before: one record per --log-every step
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3, 4, 5]
    assert text.rstrip().splitlines()[-1].startswith("done: step 5")


def test_a_long_interval_keeps_a_short_run_quiet(tmp_path, monkeypatch):
    train_dir = tmp_path / "train"
    planted_set(tmp_path, n_train=8, n_copies=2, n_unrelated=2)
    text = run_cli_to_file(["evaluate", "--generations", str(tmp_path / "gen"), "--train-shards", str(train_dir),
                            "--out", str(tmp_path / "out"), "--no-cache"], tmp_path / "log", monkeypatch)
    assert "evaluate (" not in text and "images/s" not in text  # default 30 s: nothing for a 1 s run
    assert "generations vs" in text


def test_evaluate_redirected_logs_images_per_second(tmp_path, monkeypatch):
    planted_set(tmp_path, n_train=24, n_copies=8, n_unrelated=8)
    text = run_cli_to_file(["evaluate", "--generations", str(tmp_path / "gen"), "--train-shards",
                            str(tmp_path / "train"), "--out", str(tmp_path / "out"), "--no-cache",
                            "--log-interval", "0.000001"], tmp_path / "log", monkeypatch)
    assert_plain(text)
    train_lines = progress_lines(text, "evaluate (embedded: training images)", 24, "images")
    gen_lines = progress_lines(text, "evaluate (embedded: generations)", 16, "images")
    assert train_lines and gen_lines, text
    assert train_lines[-1].startswith("evaluate (embedded: training images): 24/24 images (100%)")
    assert gen_lines[-1].startswith("evaluate (embedded: generations): 16/16 images (100%)")


def test_generalize_redirected_logs_captions_per_second(tmp_path, monkeypatch):
    model = build_tiny_lm(tmp_path / "lm")
    shards = [[f"a red car number {s}{i} parked on a street" for i in range(3)] for s in range(2)]
    in_dir = write_input_shards(tmp_path / "in", shards)
    text = run_cli_to_file(["generalize", "--shards", str(in_dir), "--out", str(tmp_path / "out"),
                            "--backend", "transformers", "--model", str(model), "--score", "off",
                            "--no-faithful", "--batch-size", "1", "--log-interval", "0.000001"],
                           tmp_path / "log", monkeypatch)
    assert_plain(text)
    lines = progress_lines(text, "generalize", 6, "captions")
    assert len(lines) >= 3, text  # one LLM call per caption, each longer than the interval
    assert lines[-1].startswith("generalize: 6/6 captions (100%)")
    assert json.loads(text.strip().splitlines()[-1])["samples_out"] == 6  # the report stays the last line
