"""An object bank of named, procedurally drawn things (the dual-fusion objects).

Each class is a drawing function on a transparent square layer in unit
coordinates; pose (rotation, mirror), scale, position, colours and background
vary per sample, the silhouette stays recognisable.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from dftrain.synthetic.palette import NAMED_COLOURS, jitter


class Pen:
    """ImageDraw in unit coordinates ([0, 1] x [0, 1] maps onto the layer)."""

    def __init__(self, layer: Image.Image):
        self.draw = ImageDraw.Draw(layer)
        self.size = layer.size[0]

    def _p(self, x: float, y: float) -> tuple[float, float]:
        return x * self.size, y * self.size

    def _box(self, x0, y0, x1, y1):
        return [*self._p(x0, y0), *self._p(x1, y1)]

    def ellipse(self, box, fill=None, outline=None, width=0.0):
        self.draw.ellipse(self._box(*box), fill=fill, outline=outline, width=max(1, int(width * self.size)))

    def rect(self, box, fill):
        self.draw.rectangle(self._box(*box), fill=fill)

    def rounded(self, box, radius, fill):
        self.draw.rounded_rectangle(self._box(*box), radius=radius * self.size, fill=fill)

    def poly(self, points, fill):
        self.draw.polygon([self._p(x, y) for x, y in points], fill=fill)

    def line(self, points, fill, width):
        self.draw.line([self._p(x, y) for x, y in points], fill=fill, width=max(1, int(width * self.size)))

    def pie(self, box, start, end, fill):
        self.draw.pieslice(self._box(*box), start, end, fill=fill)

    def arc(self, box, start, end, fill, width):
        self.draw.arc(self._box(*box), start, end, fill=fill, width=max(1, int(width * self.size)))


def _colour(rng, names: list[str]) -> tuple[int, int, int, int]:
    return (*jitter(NAMED_COLOURS[names[int(rng.integers(len(names)))]], rng), 255)


def _shade(colour, factor: float):
    return (*(int(c * factor) for c in colour[:3]), 255)


BLACK = (25, 25, 25, 255)
WHITE = (245, 245, 245, 255)


def draw_apple(pen: Pen, rng):
    body = _colour(rng, ["red", "green", "yellow", "maroon"])
    pen.ellipse((0.18, 0.28, 0.58, 0.88), fill=body)
    pen.ellipse((0.42, 0.28, 0.82, 0.88), fill=body)
    pen.rect((0.48, 0.12, 0.53, 0.34), fill=_colour(rng, ["brown"]))
    pen.ellipse((0.53, 0.14, 0.75, 0.26), fill=_colour(rng, ["green", "lime"]))


def draw_house(pen: Pen, rng):
    wall = _colour(rng, ["white", "yellow", "pink", "orange", "cyan", "grey"])
    pen.rect((0.2, 0.45, 0.8, 0.9), fill=wall)
    pen.poly([(0.1, 0.47), (0.5, 0.12), (0.9, 0.47)], fill=_colour(rng, ["red", "brown", "maroon", "navy"]))
    pen.rect((0.43, 0.62, 0.57, 0.9), fill=_colour(rng, ["brown", "maroon", "navy"]))
    window = (150, 200, 240, 255)
    pen.rect((0.26, 0.55, 0.38, 0.67), fill=window)
    pen.rect((0.62, 0.55, 0.74, 0.67), fill=window)


def draw_car(pen: Pen, rng):
    body = _colour(rng, ["red", "blue", "yellow", "green", "black", "white", "orange"])
    pen.rounded((0.06, 0.45, 0.94, 0.7), 0.06, fill=body)
    pen.poly([(0.25, 0.46), (0.34, 0.27), (0.66, 0.27), (0.77, 0.46)], fill=body)
    glass = (170, 215, 245, 255)
    pen.poly([(0.31, 0.45), (0.37, 0.31), (0.49, 0.31), (0.49, 0.45)], fill=glass)
    pen.poly([(0.53, 0.45), (0.53, 0.31), (0.64, 0.31), (0.71, 0.45)], fill=glass)
    for x in (0.27, 0.73):
        pen.ellipse((x - 0.11, 0.58, x + 0.11, 0.8), fill=BLACK)
        pen.ellipse((x - 0.05, 0.64, x + 0.05, 0.74), fill=(170, 170, 170, 255))


def draw_tree(pen: Pen, rng):
    pen.rect((0.44, 0.55, 0.56, 0.92), fill=_colour(rng, ["brown"]))
    leaves = _colour(rng, ["green", "lime", "olive", "teal"])
    if rng.random() < 0.5:  # pine
        for top, bottom, half in ((0.08, 0.4, 0.2), (0.22, 0.55, 0.28), (0.36, 0.7, 0.36)):
            pen.poly([(0.5, top), (0.5 - half, bottom), (0.5 + half, bottom)], fill=leaves)
    else:  # broadleaf
        for cx, cy, r in ((0.5, 0.3, 0.2), (0.33, 0.45, 0.18), (0.67, 0.45, 0.18), (0.5, 0.5, 0.2)):
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=leaves)


def draw_fish(pen: Pen, rng):
    body = _colour(rng, ["orange", "blue", "yellow", "purple", "red", "teal"])
    pen.poly([(0.62, 0.5), (0.92, 0.28), (0.92, 0.72)], fill=_shade(body, 0.8))
    pen.ellipse((0.08, 0.3, 0.72, 0.7), fill=body)
    if rng.random() < 0.5:
        stripe = WHITE if sum(body[:3]) < 500 else BLACK
        pen.rect((0.36, 0.33, 0.42, 0.67), fill=stripe)
    pen.ellipse((0.18, 0.42, 0.26, 0.5), fill=WHITE)
    pen.ellipse((0.2, 0.44, 0.24, 0.48), fill=BLACK)


def draw_cup(pen: Pen, rng):
    colour = _colour(rng, ["white", "red", "blue", "yellow", "green", "pink", "black"])
    pen.ellipse((0.58, 0.38, 0.86, 0.68), outline=colour, width=0.06)
    pen.poly([(0.2, 0.3), (0.7, 0.3), (0.64, 0.82), (0.26, 0.82)], fill=colour)
    pen.ellipse((0.2, 0.25, 0.7, 0.35), fill=_shade(colour, 0.6))
    if rng.random() < 0.5:
        pen.ellipse((0.1, 0.8, 0.8, 0.92), fill=_shade(colour, 0.85))


def draw_umbrella(pen: Pen, rng):
    canopy = _colour(rng, ["red", "blue", "purple", "yellow", "green", "magenta", "navy"])
    pen.pie((0.08, 0.15, 0.92, 0.75), 180, 360, fill=canopy)
    for k in range(4):  # scalloped edge: ImageDraw on RGBA replaces pixels, so this cuts holes
        x0 = 0.08 + k * 0.21
        pen.ellipse((x0, 0.38, x0 + 0.21, 0.52), fill=(0, 0, 0, 0))
    pen.line([(0.5, 0.42), (0.5, 0.82)], fill=BLACK, width=0.035)
    pen.arc((0.5, 0.72, 0.66, 0.92), 0, 180, fill=BLACK, width=0.035)
    pen.line([(0.5, 0.1), (0.5, 0.16)], fill=BLACK, width=0.03)


def draw_key(pen: Pen, rng):
    metal = _colour(rng, ["gold", "grey", "yellow", "brown"])
    pen.ellipse((0.08, 0.32, 0.42, 0.66), outline=metal, width=0.09)
    pen.rect((0.4, 0.45, 0.9, 0.54), fill=metal)
    for x in (0.66, 0.74, 0.84):
        pen.rect((x, 0.54, x + 0.05, 0.54 + float(rng.uniform(0.06, 0.14))), fill=metal)


def draw_flower(pen: Pen, rng):
    pen.line([(0.5, 0.5), (0.5, 0.95)], fill=(40, 140, 40, 255), width=0.04)
    pen.ellipse((0.5, 0.7, 0.7, 0.78), fill=(40, 150, 40, 255))
    petals = _colour(rng, ["red", "pink", "purple", "yellow", "white", "orange", "magenta"])
    count = int(rng.integers(5, 9))
    for k in range(count):
        theta = 2 * math.pi * k / count
        cx, cy = 0.5 + 0.17 * math.cos(theta), 0.35 + 0.17 * math.sin(theta)
        pen.ellipse((cx - 0.1, cy - 0.1, cx + 0.1, cy + 0.1), fill=petals)
    pen.ellipse((0.42, 0.27, 0.58, 0.43), fill=_colour(rng, ["yellow", "brown", "orange"]))


def draw_boat(pen: Pen, rng):
    pen.poly([(0.1, 0.62), (0.9, 0.62), (0.75, 0.8), (0.25, 0.8)], fill=_colour(rng, ["brown", "red", "navy", "white"]))
    pen.line([(0.5, 0.15), (0.5, 0.62)], fill=BLACK, width=0.025)
    sail = _colour(rng, ["white", "yellow", "red", "orange"])
    pen.poly([(0.52, 0.15), (0.52, 0.58), (0.82, 0.58)], fill=sail)
    pen.poly([(0.48, 0.22), (0.48, 0.58), (0.25, 0.58)], fill=_shade(sail, 0.9))
    pen.arc((0.05, 0.78, 0.35, 0.9), 180, 360, fill=(40, 90, 200, 255), width=0.025)
    pen.arc((0.55, 0.78, 0.85, 0.9), 180, 360, fill=(40, 90, 200, 255), width=0.025)


def draw_sun(pen: Pen, rng):
    colour = _colour(rng, ["yellow", "orange", "gold"])
    rays = int(rng.integers(8, 14))
    for k in range(rays):
        theta = 2 * math.pi * k / rays
        a, b = theta - 0.12, theta + 0.12
        pen.poly(
            [(0.5 + 0.25 * math.cos(a), 0.5 + 0.25 * math.sin(a)),
             (0.5 + 0.45 * math.cos(theta), 0.5 + 0.45 * math.sin(theta)),
             (0.5 + 0.25 * math.cos(b), 0.5 + 0.25 * math.sin(b))],
            fill=colour,
        )
    pen.ellipse((0.27, 0.27, 0.73, 0.73), fill=colour)


def draw_bicycle(pen: Pen, rng):
    frame = _colour(rng, ["red", "blue", "green", "black", "orange", "purple"])
    for cx in (0.25, 0.75):
        pen.ellipse((cx - 0.19, 0.45, cx + 0.19, 0.83), outline=BLACK, width=0.035)
    hub_back, hub_front, pedal, seat, bar = (0.25, 0.64), (0.75, 0.64), (0.47, 0.64), (0.4, 0.38), (0.68, 0.36)
    for a, b in ((hub_back, pedal), (pedal, seat), (seat, hub_back), (seat, bar), (pedal, bar), (bar, hub_front)):
        pen.line([a, b], fill=frame, width=0.035)
    pen.line([(0.34, 0.36), (0.46, 0.36)], fill=BLACK, width=0.04)
    pen.line([(0.66, 0.32), (0.74, 0.28)], fill=BLACK, width=0.035)


# Class id order is part of the dataset definition: append, never reorder.
OBJECT_CLASSES: list[tuple[str, object]] = [
    ("apple", draw_apple),
    ("house", draw_house),
    ("car", draw_car),
    ("tree", draw_tree),
    ("fish", draw_fish),
    ("cup", draw_cup),
    ("umbrella", draw_umbrella),
    ("key", draw_key),
    ("flower", draw_flower),
    ("boat", draw_boat),
    ("sun", draw_sun),
    ("bicycle", draw_bicycle),
]
# Every name of each class, its name first, as Tiny-ImageNet's words.txt lists them: WordNet's lemmas
# of the drawn thing's synset where it has several (car.n.01, bicycle.n.01, flower.n.02, dwelling.n.01),
# else the drawn variant's own name (the boat has sails: sailboat.n.01; the cup a handle: teacup).
# Training draws one per fusion (--object-label synonym); tree, fish, key and sun have no other name.
OBJECT_CLASS_SYNONYMS: dict[str, tuple[str, ...]] = {
    "apple": ("apple", "eating apple"),
    "house": ("house", "home", "dwelling"),
    "car": ("car", "auto", "automobile", "motorcar"),
    "tree": ("tree",),
    "fish": ("fish",),
    "cup": ("cup", "teacup"),
    "umbrella": ("umbrella", "brolly"),
    "key": ("key",),
    "flower": ("flower", "bloom", "blossom"),
    "boat": ("boat", "sailboat", "sailing boat"),
    "sun": ("sun",),
    "bicycle": ("bicycle", "bike", "cycle"),
}


def draw_object(class_id: int, rng: np.random.Generator, canvas: Image.Image) -> Image.Image:
    """Paint object `class_id` onto `canvas` (RGB) with random pose, scale and position."""
    size = canvas.size[0]
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    OBJECT_CLASSES[class_id][1](Pen(layer), rng)
    if rng.random() < 0.5:
        layer = layer.transpose(Image.FLIP_LEFT_RIGHT)
    layer = layer.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
    scale = float(rng.uniform(0.65, 1.0))
    scaled = max(8, int(size * scale))
    layer = layer.resize((scaled, scaled), Image.BILINEAR)
    slack = size - scaled
    x, y = (int(rng.integers(0, slack + 1)) for _ in range(2))
    out = canvas.convert("RGBA")
    out.alpha_composite(layer, (x, y))
    return out.convert("RGB")
