"""A LAION-like memorization regime: many unique compositional scenes, plus a small subset
of them repeated many times with their specific captions.

    dftrain shard synthetic --out DIR --n 800 --dup-images 20 --dup-factor 25 --heldout 200

As on the web, and as in the prior study's duplication experiments (Somepalli et al. 2023),
most images appear once and a few appear many times: a model has to learn the distribution
from the unique ones and can memorize the duplicated ones. Every unique image has its own
specific caption; the copies of a duplicated image are exact (same JPEG bytes, same caption).

- DIR/train: `n` unique scenes, `dup_images` of them written `dup_factor` times each
  (n - dup_images + dup_images * dup_factor samples, in a seeded shuffled order). `json` holds
  `group` (the unique image), `copy`, `copies`, `duplicated` and `content` (what was drawn:
  colour, shape, colour2, shape2, bg).
- DIR/heldout: `heldout` further scenes of the same distribution (their own RNG stream), never
  in train: the fit measure (Frechet distance to unseen images) that copying cannot improve.
- DIR/objects: the object bank for dual fusion, as for the plain synthetic set.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dftrain.errors import ConfigError
from dftrain.synthetic.captions import specific_caption
from dftrain.synthetic.encoding import check_size, jpeg_bytes
from dftrain.synthetic.scenes import render_composite_scene

REGIME_VERSION = 1  # bump when a seed's images or captions change
_STREAM_SCENE, _STREAM_PLAN, _STREAM_HELDOUT = 11, 12, 13


def _rng(seed: int, stream: int, *index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, *(int(i) for i in index)])


def check_regime(n: int, dup_images: int, dup_factor: int, heldout: int = 0) -> None:
    problems = []
    if n < 1:
        problems.append(f"--n must be >= 1, got {n}")
    if not 0 <= dup_images <= n:
        problems.append(f"--dup-images must be between 0 and --n ({n}), got {dup_images}")
    if dup_factor < 2:
        problems.append(f"--dup-factor must be >= 2 (copies of each duplicated image), got {dup_factor}")
    if heldout < 0:
        problems.append(f"--heldout must be >= 0, got {heldout}")
    if problems:
        raise ConfigError("; ".join(problems))


def duplicated_groups(n: int, dup_images: int, seed: int) -> set[int]:
    """Which of the `n` unique images are duplicated: a seeded sample, not the first ones."""
    return {int(g) for g in _rng(seed, _STREAM_PLAN).permutation(n)[:dup_images]}


def _scene(seed: int, stream: int, index: int, size: int, taken: set[str]) -> tuple:
    """(image, caption, visible content) of one scene; the caption is drawn again until no earlier scene has it."""
    rng = _rng(seed, stream, index)
    image, visible = render_composite_scene(rng, size)
    caption = specific_caption(rng, visible)
    while caption in taken:
        caption = specific_caption(rng, visible)
    taken.add(caption)
    return image, caption, visible


def _sample(key: str, jpg: bytes, caption: str, size: int, **meta) -> dict:
    return {"__key__": key, "jpg": jpg, "txt": caption,
            "json": {"key": key, "caption": caption, "width": size, "height": size, "source": "synthetic-regime",
                     **meta}}


def regime_train_samples(n: int = 800, dup_images: int = 20, dup_factor: int = 25, size: int = 32,
                         seed: int = 0) -> Iterator[dict]:
    """Writer-ready training samples: n unique scenes, `dup_images` of them `dup_factor` times each."""
    check_size(size)
    check_regime(n, dup_images, dup_factor)
    duplicated = duplicated_groups(n, dup_images, seed)
    copies = [dup_factor if g in duplicated else 1 for g in range(n)]
    slots = [(g, c) for g in range(n) for c in range(copies[g])]
    order = _rng(seed, _STREAM_PLAN, 1).permutation(len(slots))
    taken: set[str] = set()
    scenes = {}
    for g in range(n):  # captions are made in group order, so a group's caption never depends on the shuffle
        image, caption, visible = _scene(seed, _STREAM_SCENE, g, size, taken)
        scenes[g] = (jpeg_bytes(image), caption, visible)
    for index, slot in enumerate(order):
        group, copy = slots[slot]
        jpg, caption, visible = scenes[group]
        yield _sample(f"{index:09d}", jpg, caption, size, group=group, copy=copy, copies=copies[group],
                      duplicated=copies[group] > 1, content=visible)


def regime_heldout_samples(n: int = 200, size: int = 32, seed: int = 0) -> Iterator[dict]:
    """`n` unseen scenes of the same distribution (another RNG stream than every training scene)."""
    check_size(size)
    taken: set[str] = set()
    for index in range(n):
        image, caption, visible = _scene(seed, _STREAM_HELDOUT, index, size, taken)
        yield _sample(f"h{index:08d}", jpeg_bytes(image), caption, size, group=f"heldout-{index}", copy=0, copies=1,
                      duplicated=False, content=visible)
