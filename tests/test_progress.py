"""The progress policy (dftrain/progress.py): which plain lines, when, and what they say; fake clocks."""

import io
import re

import pytest

from dftrain.progress import (
    PlainLines,
    format_duration,
    interval_problem,
    plain_line,
    progress,
    start_progress,
)

LINE = re.compile(r"^(?P<label>[^:]+): (?P<count>\S+) (?P<unit>\w+)( \((?P<pct>\d+)%\))?, (?P<rate>\S+) \w+/s, "
                  r"elapsed (?P<elapsed>\S+), ETA (?P<eta>\S+)(, (?P<figures>.*))?$")


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_line_once_per_interval_and_a_last_one_at_the_end():
    lines = PlainLines("train", 100, "steps", interval=30, start=0.0)
    printed = {}
    for t in range(0, 100):  # one step per second
        line = lines.update(t + 1, float(t + 1), {"loss": 0.5})
        if line is not None:
            printed[t + 1] = line
    assert list(printed) == [30, 60, 90]  # every 30 s, not every step
    assert printed[30] == "train: 30/100 steps (30%), 1.00 steps/s, elapsed 30s, ETA 1m10s, loss 0.5"
    assert lines.finish(100, 100.0) == "train: 100/100 steps (100%), 1.00 steps/s, elapsed 1m40s, ETA 0s"


def test_the_interval_counts_from_the_last_line_not_from_the_start():
    lines = PlainLines("x", 10, "items", interval=10, start=0.0)
    assert lines.update(1, 9.9) is None
    assert lines.update(2, 25.0) is not None  # late update (a slow step): printed then ...
    assert lines.update(3, 30.0) is None  # ... and the next one 10 s after it, not at 30 s
    assert lines.update(4, 35.0) is not None


def test_a_run_shorter_than_the_interval_prints_nothing():
    lines = PlainLines("generalize", 5, "captions", interval=30, start=0.0)
    assert all(lines.update(i, float(i)) is None for i in range(1, 6))
    assert lines.finish(5, 5.0) is None


def test_rate_and_eta_count_only_this_runs_work():
    # resumed at step 500 of 1000; 100 steps in 50 s -> 2 steps/s, 400 left -> 200 s
    line = plain_line("train", 600, 1000, "steps", elapsed=50.0, start_done=500)
    match = LINE.match(line)
    assert match and match["rate"] == "2.00" and match["eta"] == "3m20s" and match["pct"] == "60"


def test_without_a_total_the_line_has_no_percentage_and_an_unknown_eta():
    match = LINE.match(plain_line("shard adopt", 7, None, "tars", elapsed=2.0))
    assert match and match["count"] == "7" and match["pct"] is None and match["eta"] == "?"


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600 * 2 + 180, "2h03m"),
                                               (86400 * 3 + 3600 * 4, "3d04h"), (None, "?"), (float("inf"), "?")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_the_display_prints_plain_lines_on_its_stream_and_skipped_work_is_not_in_the_rate():
    clock, out = FakeClock(), io.StringIO()
    with progress("precompute", 40, unit="samples", interval=10, clock=clock, bar=False, stream=out) as shown:
        shown.skip(20)  # already done: counted, not in the rate
        for _ in range(10):
            clock.now += 2.0
            shown.advance(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 10 s, 20 s, and the last one
    first = LINE.match(lines[0])
    assert first["count"] == "25/40" and first["rate"] == "0.500" and first["eta"] == "30s"
    assert LINE.match(lines[-1])["count"] == "30/40"
    assert "\x1b" not in out.getvalue()


def test_figures_are_kept_until_replaced():
    clock, out = FakeClock(), io.StringIO()
    shown = start_progress("train", 3, unit="steps", interval=1, clock=clock, bar=False, stream=out)
    clock.now += 2
    shown.update(1, loss=0.25)
    clock.now += 2
    shown.update(2)
    shown.close()
    assert [line.rsplit(", ", 1)[-1] for line in out.getvalue().splitlines()] == ["loss 0.25"] * 3


def test_a_disabled_display_prints_nothing(capsys):
    clock = FakeClock()
    with progress("generate", 4, unit="images", enabled=False, interval=0.001, clock=clock, bar=False) as shown:
        for _ in range(4):
            clock.now += 1
            shown.advance()
    assert capsys.readouterr().out == ""


def test_plain_lines_go_to_stdout_when_it_is_not_a_terminal(capsys):
    clock = FakeClock()
    with progress("generate", 2, unit="images", interval=1, clock=clock) as shown:  # pytest's stdout: no tty
        clock.now += 5
        shown.advance(2)
    out = capsys.readouterr().out
    assert out.startswith("generate: 2/2 images (100%), 0.400 images/s") and "\x1b" not in out


def test_the_bar_draws_on_a_terminal_with_the_same_figures():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    clock, screen = FakeClock(), Terminal()
    with progress("train", 10, unit="steps", clock=clock, bar=True, stream=screen) as shown:
        clock.now += 5
        shown.update(5, loss=0.5)
    text = screen.getvalue()
    assert "5/10 steps (50%)" in text and "1.00 steps/s" in text and "ETA 5s" in text and "loss 0.5" in text


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "30", True, None])
def test_bad_intervals_are_refused(value):
    assert interval_problem(value) is not None


def test_the_cli_option_refuses_a_bad_interval_in_one_line():
    from typer.testing import CliRunner

    from dftrain.cli import app

    result = CliRunner().invoke(app, ["shard", "build", "--images", ".", "--captions", "x.json", "--out", "o",
                                      "--log-interval", "0"])
    assert result.exit_code == 2 and "--log-interval" in result.output and "Traceback" not in result.output
