"""Procedural backgrounds: gradients, stripes, checkers, noise, radial glows, solid fills.

Each function draws at the (supersampled) canvas size and returns the image plus
the colours it used, so shapes can be given a contrasting colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from dftrain.synthetic.palette import BACKGROUND_PALETTES


@dataclass
class Background:
    image: Image.Image
    style: str  # caption word: "striped", "checkered", ...
    palette: str
    colours: list[tuple[int, int, int]]


def _two_colours(rng: np.random.Generator, palette: list[tuple[int, int, int]]) -> tuple:
    first, second = rng.choice(len(palette), size=2, replace=False)
    return palette[first], palette[second]


def _blend(a, b, t: np.ndarray) -> np.ndarray:
    """Per-pixel linear blend of two RGB colours by t in [0, 1] (shape HxW)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    return xs, ys


def gradient(rng, size, palette):
    a, b = _two_colours(rng, palette)
    xs, ys = _coords(size)
    angle = rng.uniform(0, 2 * np.pi)
    t = (xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return _blend(a, b, t), "gradient", [a, b]


def stripes(rng, size, palette):
    a, b = _two_colours(rng, palette)
    xs, ys = _coords(size)
    angle = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4])
    period = rng.uniform(0.08, 0.3)
    t = (xs * np.cos(angle) + ys * np.sin(angle)) / period
    return _blend(a, b, (np.floor(t) % 2).astype(np.float32)), "striped", [a, b]


def checkers(rng, size, palette):
    a, b = _two_colours(rng, palette)
    xs, ys = _coords(size)
    cells = int(rng.integers(3, 9))
    t = ((np.floor(xs * cells) + np.floor(ys * cells)) % 2).astype(np.float32)
    return _blend(a, b, t), "checkered", [a, b]


def noise(rng, size, palette):
    a, b = _two_colours(rng, palette)
    coarse = int(rng.integers(4, 12))
    field = rng.random((coarse, coarse)).astype(np.float32)
    # Smooth value noise: bilinear upsampling of a coarse random grid.
    t = np.asarray(Image.fromarray((field * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR))
    t = t.astype(np.float32) / 255.0
    grain = rng.normal(0, 0.06, size=(size, size)).astype(np.float32)
    return _blend(a, b, np.clip(t + grain, 0, 1)), "textured", [a, b]


def radial(rng, size, palette):
    a, b = _two_colours(rng, palette)
    xs, ys = _coords(size)
    cx, cy = rng.uniform(0.2, 0.8, size=2)
    t = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / 0.9
    return _blend(a, b, np.clip(t, 0, 1)), "glowing", [a, b]


def solid(rng, size, palette):
    a = palette[int(rng.integers(len(palette)))]
    return _blend(a, a, np.zeros((size, size), np.float32)), "plain", [a]


STYLES = {
    "gradient": gradient,
    "stripes": stripes,
    "checkers": checkers,
    "noise": noise,
    "radial": radial,
    "solid": solid,
}


def random_background(
    rng: np.random.Generator, size: int, styles: tuple[str, ...] | None = None, palettes: tuple[str, ...] | None = None
) -> Background:
    """A background drawn with a random style from a random palette family."""
    style_names = styles or tuple(STYLES)
    palette_names = palettes or tuple(BACKGROUND_PALETTES)
    style = style_names[int(rng.integers(len(style_names)))]
    palette_name = palette_names[int(rng.integers(len(palette_names)))]
    pixels, word, colours = STYLES[style](rng, size, BACKGROUND_PALETTES[palette_name])
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return Background(image=image, style=word, palette=palette_name, colours=colours)
