"""Named colours and background palettes shared by the synthetic drawings.

Colour names double as caption words ("red star"), so every colour a shape can be
drawn in has a plain English name.
"""

from __future__ import annotations

import numpy as np

# Saturated colours for shapes and objects; names are used verbatim in captions.
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (255, 127, 14),
    "yellow": (250, 212, 30),
    "green": (44, 160, 44),
    "lime": (150, 220, 40),
    "teal": (0, 128, 128),
    "cyan": (30, 200, 220),
    "blue": (31, 90, 200),
    "navy": (20, 30, 100),
    "purple": (128, 50, 160),
    "magenta": (220, 40, 160),
    "pink": (250, 150, 190),
    "brown": (120, 70, 30),
    "maroon": (120, 20, 40),
    "olive": (110, 120, 30),
    "gold": (212, 175, 55),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
}

# Background palette families: (caption word, colours).
BACKGROUND_PALETTES: dict[str, list[tuple[int, int, int]]] = {
    "pastel": [(255, 224, 230), (220, 240, 255), (225, 255, 225), (255, 250, 210), (235, 225, 255), (255, 235, 215)],
    "dark": [(25, 25, 40), (40, 20, 30), (15, 40, 35), (45, 45, 45), (30, 30, 70), (60, 30, 15)],
    "earthy": [(160, 120, 80), (200, 180, 140), (110, 130, 80), (180, 100, 60), (140, 140, 110), (90, 70, 50)],
    "neon": [(255, 0, 200), (0, 255, 180), (255, 240, 0), (0, 170, 255), (170, 0, 255), (255, 90, 0)],
    "mono": [(250, 250, 250), (200, 200, 200), (150, 150, 150), (100, 100, 100), (60, 60, 60), (20, 20, 20)],
    "light": [(250, 250, 250), (225, 225, 225), (200, 235, 245), (235, 245, 225), (245, 235, 220), (215, 215, 235)],
    "ocean": [(0, 60, 120), (0, 120, 170), (90, 180, 210), (200, 235, 245), (0, 90, 100), (20, 40, 80)],
}


def colour_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Euclidean RGB distance; enough to keep shapes visible against their background."""
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def pick_contrasting(
    rng: np.random.Generator, against: list[tuple[int, int, int]], min_distance: float = 110.0
) -> str:
    """A colour name whose RGB is at least `min_distance` from every colour in `against`."""
    names = list(NAMED_COLOURS)
    order = rng.permutation(len(names))
    for index in order:
        name = names[index]
        if all(colour_distance(NAMED_COLOURS[name], c) >= min_distance for c in against):
            return name
    # Fall back to the colour farthest from the background (always exists).
    return max(names, key=lambda n: min(colour_distance(NAMED_COLOURS[n], c) for c in against))


def jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = 18) -> tuple[int, int, int]:
    """The same colour name, a slightly different shade (so same-named colours vary)."""
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)  # type: ignore[return-value]
