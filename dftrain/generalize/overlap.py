"""Keep the LLM busy: scoring and writing a finished shard (or table part) run in a background thread
while the next one is generalized.

    with Background() as background:
        for part in parts:
            results = generalizer.generalize(texts)          # the LLM (GPU), this thread
            background.submit(finish, part, results)         # scores + writes, the other thread

At most one job waits: `submit` first waits for the previous job, so memory holds two parts at most,
and an error in a job is raised by the next `submit` (or on leaving the block).

spaCy pipelines and NLTK's WordNet reader are not safe to share between threads (the reader seeks in
shared files), so every call into the faithfulness checker and the generality scorer goes through
`Locked` with one lock: the NLP work of the two threads is serialized, and what overlaps is the LLM
(torch or the vLLM engine, which release the GIL or run in their own process) with the scoring.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Locked:
    """A proxy whose method calls hold `lock` (attributes read through unchanged)."""

    def __init__(self, target: Any, lock: threading.Lock):
        self._target, self._lock = target, lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return call


class Background:
    """One worker thread for finishing jobs; `enabled=False` runs each job at once, in this thread."""

    def __init__(self, enabled: bool = True):
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dftrain-finish") if enabled else None
        self._pending: Future | None = None

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        self.wait()
        if self._executor is None:
            job(*args)
        else:
            self._pending = self._executor.submit(job, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:
                self._pending.exception()  # let a running job finish its files; the first error is raised
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
