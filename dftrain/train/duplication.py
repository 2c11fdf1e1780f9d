"""Duplication-weighted sampling of the prior study (Somepalli et al. 2023, "Understanding and
mitigating copying in diffusion models"): a fixed fraction of the training samples (5%) is drawn
with a larger weight (5), as duplicated images are drawn on the web.

- dup_both: the chosen samples are seen `weight` times as often, with their caption;
- dup_image: the same images as often, each time with a random caption of theirs (their `captions`
  in json when there are several), so the image is duplicated but not its text.

dftrain streams shards instead of drawing indices, so "weight w" is w occurrences per epoch: the
sample itself, and w - 1 copies placed at random later positions (within `window` items), so
copies do not land in the same batch. The choice of samples is a pure function of the key and the
seed; the placement draws from the epoch's generator, so a resumed run replays the same stream.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, Iterator

DUP_SAMPLING_MODES = ("none", "dup_both", "dup_image")


def is_chosen(key: str, fraction: float, seed: int) -> bool:
    """Whether sample `key` is among the `fraction` drawn with more weight (stable across epochs and ranks)."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def spread_copies(items: Iterable[dict], chosen: Callable[[dict], bool], weight: int, window: int,
                  rng: random.Random) -> Iterator[tuple[dict, bool]]:
    """(item, is_chosen) for every item, and weight - 1 more times for each chosen one, the extra
    times at random positions 1..window later (the rest of the stream when it ends first)."""
    pending: list[tuple[int, int, dict]] = []  # (position it is due at, order, item)
    position = order = 0
    for item in items:
        while pending and pending[0][0] <= position:
            yield heapq.heappop(pending)[2], True
            position += 1
        picked = chosen(item)
        yield item, picked
        position += 1
        if picked:
            for _ in range(weight - 1):
                heapq.heappush(pending, (position + rng.randrange(window), order, item))
                order += 1
    while pending:
        yield heapq.heappop(pending)[2], True


def random_caption(captions: list[str], rng: random.Random) -> str:
    return captions[rng.randrange(len(captions))]
