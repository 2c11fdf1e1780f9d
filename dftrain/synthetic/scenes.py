"""Compositional scenes: a textured ground under a sky, geometric shapes, and named objects
(car, house, tree, ...) at random places, sizes and colours.

Every factor is drawn independently (background style and palette, horizon, which objects,
where, how large, which colours), so a few hundred scenes leave most combinations unseen:
a model has to learn the parts and how they combine, not a list of pictures. The caption
words come from what was drawn ("red car", "green tree", "striped").
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from dftrain.synthetic.backgrounds import random_background
from dftrain.synthetic.objects import OBJECT_CLASSES, Pen
from dftrain.synthetic.palette import BACKGROUND_PALETTES, NAMED_COLOURS, jitter, pick_contrasting
from dftrain.synthetic.shapes import SHAPES

SUPERSAMPLE = 4  # drawn at 4x and downsampled: anti-aliased edges
HORIZON_P = 0.6  # share of scenes with a sky above the ground
OBJECTS = (1, 3)  # objects per scene (inclusive)
SHAPES_PER_SCENE = (0, 2)  # small geometric shapes per scene (inclusive)
_NAMED = np.array(list(NAMED_COLOURS.values()), dtype=np.float32)
_NAMES = list(NAMED_COLOURS)


def dominant_colour(layer: Image.Image) -> str:
    """The colour name covering most of a layer's opaque pixels (nearest named colour per pixel)."""
    pixels = np.asarray(layer.convert("RGBA").resize((32, 32), Image.NEAREST), dtype=np.float32).reshape(-1, 4)
    opaque = pixels[pixels[:, 3] > 0, :3]
    if not len(opaque):
        return "grey"
    nearest = ((opaque[:, None, :] - _NAMED[None]) ** 2).sum(axis=2).argmin(axis=1)
    return _NAMES[int(np.bincount(nearest, minlength=len(_NAMES)).argmax())]


def _background(rng: np.random.Generator, canvas: int) -> tuple[Image.Image, str, list]:
    """Ground texture over the whole frame, and (sometimes) a sky above a random horizon."""
    ground = random_background(rng, canvas)
    image, colours = ground.image, list(ground.colours)
    if rng.random() < HORIZON_P:
        palettes = list(BACKGROUND_PALETTES)
        sky = random_background(rng, canvas, styles=("gradient", "radial", "solid"),
                                palettes=(palettes[int(rng.integers(len(palettes)))],))
        horizon = int(canvas * rng.uniform(0.3, 0.75))
        image.paste(sky.image.crop((0, 0, canvas, horizon)), (0, 0))
        colours += sky.colours
    return image, ground.style, colours


def _shape_layer(rng: np.random.Generator, canvas: int, against: list) -> tuple[Image.Image, str, str]:
    name = list(SHAPES)[int(rng.integers(len(SHAPES)))]
    colour = pick_contrasting(rng, against)
    radius = canvas * rng.uniform(0.08, 0.18)
    cx, cy = (float(v) for v in rng.uniform(radius, canvas - radius, size=2))
    mask = Image.new("L", (canvas, canvas), 0)
    SHAPES[name](ImageDraw.Draw(mask), cx, cy, float(radius), float(rng.uniform(0, 2 * np.pi)))
    layer = Image.new("RGBA", (canvas, canvas), (*jitter(NAMED_COLOURS[colour], rng), 0))
    layer.putalpha(mask)
    return layer, colour, name


def _object_layer(rng: np.random.Generator, canvas: int) -> tuple[Image.Image, tuple[int, int], str, str, float]:
    """(layer, position, colour name, class name, scale) of one object; positions may overhang the frame a little."""
    class_id = int(rng.integers(len(OBJECT_CLASSES)))
    scale = float(rng.uniform(0.3, 0.6))
    side = int(canvas * scale)
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    OBJECT_CLASSES[class_id][1](Pen(layer), rng)
    if rng.random() < 0.5:
        layer = layer.transpose(Image.FLIP_LEFT_RIGHT)
    overhang = side // 6
    x, y = (int(v) for v in rng.integers(-overhang, canvas - side + overhang + 1, size=2))
    return layer, (x, y), dominant_colour(layer), OBJECT_CLASSES[class_id][0], scale


def render_composite_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, dict[str, str]]:
    """One scene and its visible content {colour, shape, colour2, shape2, bg} for the caption:
    `colour shape` is the largest object, `colour2 shape2` another object or a shape."""
    canvas_size = size * SUPERSAMPLE
    background, style, colours = _background(rng, canvas_size)
    canvas = background.convert("RGBA")
    shapes = [_shape_layer(rng, canvas_size, colours)
              for _ in range(int(rng.integers(SHAPES_PER_SCENE[0], SHAPES_PER_SCENE[1] + 1)))]
    objects = [_object_layer(rng, canvas_size) for _ in range(int(rng.integers(OBJECTS[0], OBJECTS[1] + 1)))]
    objects.sort(key=lambda o: o[4])  # smaller first, so the largest (the caption's main object) is on top
    for layer, _, _ in shapes:
        canvas.alpha_composite(layer)
    for layer, (x, y), _, _, _ in objects:
        canvas.paste(layer, (x, y), layer)
    main = objects[-1]
    second = (objects[-2][2], objects[-2][3]) if len(objects) > 1 else \
        (shapes[0][1], shapes[0][2]) if shapes else (main[2], main[3])
    image = canvas.convert("RGB").resize((size, size), Image.LANCZOS)
    return image, {"colour": main[2], "shape": main[3], "colour2": second[0], "shape2": second[1], "bg": style}
