"""A rich progress bar over samples with captions/s and the ETA."""

from __future__ import annotations

import time
from collections.abc import Callable


class progress_bar:
    """A rich progress bar over samples with captions/s and ETA; a no-op when disabled."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total
        self._progress = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("generalize"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]} captions/s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), transient=False)
        self._progress.start()
        task = self._progress.add_task("generalize", total=self.total, rate="-")
        start = time.perf_counter()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            elapsed = time.perf_counter() - start
            rate = f"{done[0] / elapsed:.1f}" if elapsed > 0 else "-"
            self._progress.update(task, advance=n, rate=rate)

        return advance

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
