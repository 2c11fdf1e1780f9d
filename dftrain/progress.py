"""The one progress display of every long stage (train, precompute, generalize, score, generate,
evaluate, shard build / objects / adopt).

- stdout and stderr both terminals: a rich bar with done/total, the rate, elapsed time, ETA and the
  stage's key figure (loss, ...).
- otherwise (sbatch, `> log`, a pipe): the same figures as one plain line every `--log-interval`
  seconds (default 30), and a last line at the end once any line was printed; a run shorter than
  the interval prints none. No escape codes.
- on stdout, or stderr for a stage whose stdout carries data (score --file).
- rank 0 only: the caller passes `enabled=False` on the other ranks.

The JSON-lines metrics of a stage (train's metrics.jsonl, ...) are separate and unchanged.

    with progress("generalize", total=n, unit="captions", enabled=rank == 0) as bar:
        bar.advance(len(batch))
    with progress("train", total=steps, unit="steps", done=start_step, interval=cfg.log_interval) as bar:
        bar.update(step, loss=0.1234)

`PlainLines` decides which lines to print and when from the clock's readings it is given (pure).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

DEFAULT_LOG_INTERVAL = 30.0
LOG_INTERVAL_HELP = ("Seconds between progress lines (done/total, rate, ETA) when output is not a terminal "
                     "(sbatch, `> log`); on a terminal: a bar.")

# Set by the shared --log-interval option of each stage (dftrain/commands/__init__.py) for this
# process; a call can still pass its own interval (train reads it from its config).
_interval = DEFAULT_LOG_INTERVAL


def set_default_interval(seconds: float) -> None:
    """The interval of plain lines for every later `progress()` in this process that passes none."""
    global _interval
    problem = interval_problem(seconds)
    if problem:
        raise ValueError(problem)
    _interval = float(seconds)


def default_interval() -> float:
    return _interval


def interval_problem(seconds) -> str | None:
    """Why `seconds` is not a usable --log-interval (None when it is)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0 \
            or seconds == float("inf"):
        return f"--log-interval must be a number of seconds > 0, got {seconds!r}"
    return None


def interactive() -> bool:
    """Whether a person watches: stdout and stderr are both terminals (not sbatch, `> log` or a pipe)."""
    return _isatty(sys.stdout) and _isatty(sys.stderr)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no such method, or closed
        return False


# --------------------------------------------------------------------------- formatting (pure)


def format_duration(seconds: float | None) -> str:
    """45s, 4m05s, 2h03m, 3d04h; '?' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_number(value: float) -> str:
    """Three significant digits, without an exponent for everyday sizes: 0.123, 3.20, 45.6, 1234."""
    if value == 0 or not value == value:
        return f"{value:g}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01:
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return f"{value:.3g}"


def format_figures(figures: dict) -> str:
    """'loss 0.1234, lr 0.001': floats with 4 significant digits, anything else as it is."""
    return ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in figures.items())


def count_text(done: int, total: int | None, unit: str) -> str:
    """'120/1000 steps (12%)', or '120 steps' without a total."""
    if not total:
        return f"{done} {unit}"
    return f"{done}/{total} {unit} ({100 * done / total:.0f}%)"


def stats_text(done: int, total: int | None, unit: str, elapsed: float, start_done: int = 0,
               figures: dict | None = None) -> str:
    """'3.20 steps/s, elapsed 37s, ETA 4m35s, loss 0.1234': the rate is over this run (since `start_done`)."""
    rate = (done - start_done) / elapsed if elapsed > 0 else None
    eta = (total - done) / rate if total and rate else None
    parts = [f"{format_number(rate) if rate is not None else '-'} {unit}/s", f"elapsed {format_duration(elapsed)}",
             f"ETA {format_duration(eta if total else None)}"]
    if figures:
        parts.append(format_figures(figures))
    return ", ".join(parts)


def plain_line(label: str, done: int, total: int | None, unit: str, elapsed: float, start_done: int = 0,
               figures: dict | None = None) -> str:
    """'train: 120/1000 steps (12%), 3.20 steps/s, elapsed 37s, ETA 4m35s, loss 0.1234'."""
    return f"{label}: {count_text(done, total, unit)}, {stats_text(done, total, unit, elapsed, start_done, figures)}"


class PlainLines:
    """Which plain lines to print and when (pure: the caller passes the clock's readings).

    A line when `interval` seconds have passed since the start or since the last line; at the end,
    a last line only when some line was printed before (a short run stays quiet)."""

    def __init__(self, label: str, total: int | None, unit: str, interval: float, start: float, done: int = 0):
        self.label, self.total, self.unit, self.interval = label, total, unit, interval
        self.start, self.start_done = start, done
        self.next_at = start + interval
        self.printed = 0

    def _line(self, done: int, now: float, figures: dict | None) -> str:
        self.printed += 1
        return plain_line(self.label, done, self.total, self.unit, now - self.start, self.start_done, figures)

    def update(self, done: int, now: float, figures: dict | None = None) -> str | None:
        if now < self.next_at:
            return None
        self.next_at = now + self.interval
        return self._line(done, now, figures)

    def finish(self, done: int, now: float, figures: dict | None = None) -> str | None:
        return self._line(done, now, figures) if self.printed else None


# --------------------------------------------------------------------------- the display


class Progress:
    """What a stage feeds: `advance(n, **figures)` or `update(done, **figures)`; figures (loss=...) are
    kept until replaced. `skip(n)`: n items found already done (counted, but not in the rate). This
    base class shows nothing (a disabled display, other ranks)."""

    def __init__(self, label: str, total: int | None, unit: str, done: int, clock: Callable[[], float]):
        self.label, self.total, self.unit, self.done = label, total, unit, done
        self.start_done, self.clock, self.start = done, clock, clock()
        self.figures: dict = {}

    def advance(self, n: int = 1, **figures) -> None:
        self.update(self.done + n, **figures)

    def update(self, done: int, **figures) -> None:
        self.done = done
        self.figures.update(figures)
        self._show()

    def skip(self, n: int) -> None:
        self.start_done += n
        self.advance(n)

    def counting(self, items: Iterable[T]) -> Iterator[T]:
        """The items, advancing by one after each."""
        for item in items:
            yield item
            self.advance()

    def close(self) -> None:
        pass

    def _show(self) -> None:
        pass


class _PlainProgress(Progress):
    def __init__(self, *args, interval: float, stream=None):
        super().__init__(*args)
        self.lines = PlainLines(self.label, self.total, self.unit, interval, self.start, self.done)
        self.stream = stream

    def _print(self, line: str | None) -> None:
        if line is not None:
            stream = self.stream or sys.stdout  # looked up late: tests and redirections replace sys.stdout
            print(line, file=stream, flush=True)

    def _show(self) -> None:
        self.lines.start_done = self.start_done
        self._print(self.lines.update(self.done, self.clock(), self.figures))

    def close(self) -> None:
        self._print(self.lines.finish(self.done, self.clock(), self.figures))


class _BarProgress(Progress):
    def __init__(self, *args, stream=None):
        super().__init__(*args)
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(TextColumn(escape(self.label)), BarColumn(), TextColumn("{task.fields[count]}"),
                                TextColumn("{task.fields[stats]}"), console=Console(file=stream or sys.stdout))
        self.task = self.bar.add_task(self.label, total=self.total, completed=self.done, **self._fields())
        self.bar.start()

    def _fields(self) -> dict[str, str]:
        elapsed = self.clock() - self.start
        return {"count": _escape(count_text(self.done, self.total, self.unit)),
                "stats": _escape(stats_text(self.done, self.total, self.unit, elapsed, self.start_done,
                                                  self.figures))}

    def _show(self) -> None:
        self.bar.update(self.task, completed=self.done, **self._fields())

    def close(self) -> None:
        self._show()
        self.bar.stop()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def start_progress(label: str, total: int | None = None, *, unit: str = "items", enabled: bool = True,
                   done: int = 0, interval: float | None = None, clock: Callable[[], float] = time.monotonic,
                   bar: bool | None = None, stream=None) -> Progress:
    """The stage's progress display (see the module docstring); call `close()` at the end (or use
    `progress()`). `bar` None decides by the terminal; `interval` None is --log-interval's."""
    if not enabled:
        return Progress(label, total, unit, done, clock)
    if interactive() if bar is None else bar:
        return _BarProgress(label, total, unit, done, clock, stream=stream)
    return _PlainProgress(label, total, unit, done, clock,
                          interval=default_interval() if interval is None else interval, stream=stream)


@contextmanager
def progress(label: str, total: int | None = None, **options) -> Iterator[Progress]:
    """`start_progress` as a context: closed (last line, bar stopped) however the block ends."""
    handle = start_progress(label, total, **options)
    try:
        yield handle
    finally:
        handle.close()
