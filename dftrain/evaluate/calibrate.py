"""Measure a descriptor on planted copies against unrelated pairs.

Used to choose and document the embedded descriptor's copy threshold, and by the
benchmark. Sources are random scenes (augment.random_scene) unless given.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dftrain.evaluate.augment import AUGMENTATIONS, augment, random_scene


def planted_copy_similarities(descriptor, sources: list[Image.Image], *, seed: int = 0,
                              kinds_list: tuple[tuple[str, ...], ...] | None = None) -> dict[str, np.ndarray]:
    """Cosine of each source with its augmented copy, per augmentation set; and of unrelated pairs.

    Returns {"<kinds joined by +>": sims of copy vs its source, ..., "unrelated": sims of
    distinct sources (all pairs i < j), "copy_rank1": fraction of copies whose nearest source is their own}.
    """
    rng = np.random.default_rng(seed)
    if kinds_list is None:
        kinds_list = tuple((k,) for k in AUGMENTATIONS) + (AUGMENTATIONS,)
    base = descriptor.embed(sources)
    out: dict[str, np.ndarray] = {}
    rank1 = []
    for kinds in kinds_list:
        copies = descriptor.embed([augment(s, rng, kinds) for s in sources])
        sims = copies @ base.T
        out["+".join(kinds)] = np.diag(sims).copy()
        rank1.append(sims.argmax(axis=1) == np.arange(len(sources)))
    pair = base @ base.T
    out["unrelated"] = pair[np.triu_indices(len(sources), k=1)]
    out["copy_rank1"] = np.array([np.concatenate(rank1).mean()])
    return out


def scenes(n: int, seed: int = 0, size: int = 96) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, size) for _ in range(n)]
