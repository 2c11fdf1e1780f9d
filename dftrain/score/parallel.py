"""Scoring with several processes: one spaCy pipeline per process, one thread each.

Captions are deduplicated in the parent, the unique ones are cut into chunks,
workers score chunks (imap keeps the order), and the parent maps scores back
to every input caption.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from dftrain.errors import ConfigError
from dftrain.processes import worker_context

CHUNK_SIZE = 1000
_worker_scorer = None


def _init_worker(spacy_model: str | None, abstraction: str, tokens: str) -> None:
    global _worker_scorer
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # imported by something else in this process: one thread per worker
        sys.modules["torch"].set_num_threads(1)
    from dftrain.score import scorer

    _worker_scorer = scorer.load_scorer(spacy_model, abstraction, tokens=tokens)


def _score_chunk(captions: list[str]) -> list[dict]:
    return _worker_scorer.score_many(captions)


def score_parallel(
    captions: Sequence[str],
    *,
    workers: int,
    spacy_model: str | None = None,
    abstraction: str = "paper",
    tokens: str = "paper",
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Like Scorer.score_many, with `workers` processes (workers=1 runs in this process)."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    unique = list(dict.fromkeys(captions))
    if workers == 1 or len(unique) <= chunk_size:
        from dftrain.score.scorer import load_scorer

        scorer = load_scorer(spacy_model, abstraction, tokens=tokens)
        scored = []
        for start in range(0, len(unique), chunk_size):
            scored.extend(scorer.score_many(unique[start : start + chunk_size]))
            if progress:
                progress(len(scored))
    else:
        # Build the WordNet root and noun cache once here, before the workers race for them.
        from dftrain.score.scorer import load_scorer

        load_scorer(spacy_model, abstraction, tokens=tokens)
        chunks = [unique[start : start + chunk_size] for start in range(0, len(unique), chunk_size)]
        scored = []
        with worker_context().Pool(workers, initializer=_init_worker, initargs=(spacy_model, abstraction, tokens)) as pool:
            for rows in pool.imap(_score_chunk, chunks):
                scored.extend(rows)
                if progress:
                    progress(len(scored))
    by_caption = {row["caption"]: row for row in scored}
    return [dict(by_caption[caption]) for caption in captions]
