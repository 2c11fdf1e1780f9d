"""Random scenes to measure a descriptor on (planted copies against unrelated pairs): used by the
benchmark that chose and documents the embedded descriptor's copy threshold."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dftrain.evaluate.augment import random_scene


def scenes(n: int, seed: int = 0, size: int = 96) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, size) for _ in range(n)]
