"""Geometric shapes drawn as masks: circles, polygons, stars, rings, crosses, crescents.

A shape is a function (draw, cx, cy, r, angle) that paints 255 into an "L" mask;
the caller composites a colour through the mask, so every shape works on every
background.
"""

from __future__ import annotations

import math

from PIL import ImageDraw


def _regular_polygon(cx: float, cy: float, r: float, sides: int, angle: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(angle + 2 * math.pi * k / sides), cy + r * math.sin(angle + 2 * math.pi * k / sides))
        for k in range(sides)
    ]


def _star_points(cx: float, cy: float, r: float, points: int, angle: float, inner: float = 0.45):
    vertices = []
    for k in range(2 * points):
        radius = r if k % 2 == 0 else r * inner
        theta = angle + math.pi * k / points
        vertices.append((cx + radius * math.cos(theta), cy + radius * math.sin(theta)))
    return vertices


def circle(draw: ImageDraw.ImageDraw, cx, cy, r, angle):
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)


def square(draw, cx, cy, r, angle):
    draw.polygon(_regular_polygon(cx, cy, r, 4, angle + math.pi / 4), fill=255)


def triangle(draw, cx, cy, r, angle):
    draw.polygon(_regular_polygon(cx, cy, r, 3, angle - math.pi / 2), fill=255)


def pentagon(draw, cx, cy, r, angle):
    draw.polygon(_regular_polygon(cx, cy, r, 5, angle - math.pi / 2), fill=255)


def hexagon(draw, cx, cy, r, angle):
    draw.polygon(_regular_polygon(cx, cy, r, 6, angle), fill=255)


def star(draw, cx, cy, r, angle):
    draw.polygon(_star_points(cx, cy, r, 5, angle - math.pi / 2), fill=255)


def ring(draw, cx, cy, r, angle):
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=max(2, int(r * 0.35)))


def diamond(draw, cx, cy, r, angle):
    draw.polygon([(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)], fill=255)


def cross(draw, cx, cy, r, angle):
    w = r * 0.35
    draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=255)
    draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=255)


def crescent(draw, cx, cy, r, angle):
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    ox, oy = cx + 0.45 * r * math.cos(angle), cy + 0.45 * r * math.sin(angle)
    draw.ellipse([ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r], fill=0)


def heart(draw, cx, cy, r, angle):
    lobe = r * 0.5
    draw.ellipse([cx - r, cy - r * 0.8, cx, cy - r * 0.8 + 2 * lobe], fill=255)
    draw.ellipse([cx, cy - r * 0.8, cx + r, cy - r * 0.8 + 2 * lobe], fill=255)
    draw.polygon([(cx - r * 0.97, cy - r * 0.15), (cx + r * 0.97, cy - r * 0.15), (cx, cy + r)], fill=255)


# Caption name -> drawing function.
SHAPES = {
    "circle": circle,
    "square": square,
    "triangle": triangle,
    "pentagon": pentagon,
    "hexagon": hexagon,
    "star": star,
    "ring": ring,
    "diamond": diamond,
    "cross": cross,
    "crescent": crescent,
    "heart": heart,
}
