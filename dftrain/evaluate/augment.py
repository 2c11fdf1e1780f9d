"""Seeded image augmentations and random scenes, used to plant copies.

The copy-detection descriptors are checked (tests, calibration) on augmented
copies of training images: each augmentation is what a near-copy in the wild
tends to differ by (crop, mirror, resize, JPEG re-encoding, colour changes).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance


def random_crop(img: Image.Image, rng: np.random.Generator, min_area: float = 0.7) -> Image.Image:
    """A crop covering `min_area`..1 of the image area, at a random position, aspect kept within 10%."""
    w, h = img.size
    area = rng.uniform(min_area, 1.0)
    aspect = rng.uniform(0.9, 1.1)
    cw = int(round(min(w, w * np.sqrt(area * aspect))))
    ch = int(round(min(h, h * np.sqrt(area / aspect))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    return img.crop((x0, y0, x0 + cw, y0 + ch))


def mirror(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def resize(img: Image.Image, rng: np.random.Generator, low: float = 0.5, high: float = 2.0) -> Image.Image:
    scale = rng.uniform(low, high)
    w, h = img.size
    return img.resize((max(8, int(w * scale)), max(8, int(h * scale))), Image.Resampling.BICUBIC)


def jpeg(img: Image.Image, rng: np.random.Generator, low: int = 30, high: int = 80) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(rng.integers(low, high + 1)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def colour_jitter(img: Image.Image, rng: np.random.Generator, strength: float = 0.3) -> Image.Image:
    """Brightness, contrast and saturation each scaled by 1 +- strength, and a small hue shift."""
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(1 - strength, 1 + strength))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(1 - strength, 1 + strength))
    img = ImageEnhance.Color(img).enhance(rng.uniform(1 - strength, 1 + strength))
    hsv = np.asarray(img.convert("HSV")).copy()
    shift = int(rng.integers(-12, 13))  # about +-17 degrees of hue
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


AUGMENTATIONS = ("crop", "flip", "resize", "jpeg", "colour")


def augment(img: Image.Image, rng: np.random.Generator, kinds: tuple[str, ...] = AUGMENTATIONS) -> Image.Image:
    """Apply the named augmentations in a fixed order (crop, flip, resize, colour, jpeg)."""
    unknown = set(kinds) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}; known: {AUGMENTATIONS}")
    out = img.convert("RGB")
    if "crop" in kinds:
        out = random_crop(out, rng)
    if "flip" in kinds:
        out = mirror(out)
    if "resize" in kinds:
        out = resize(out, rng)
    if "colour" in kinds:
        out = colour_jitter(out, rng)
    if "jpeg" in kinds:
        out = jpeg(out, rng)
    return out


def random_scene(rng: np.random.Generator, size: int = 96) -> Image.Image:
    """An image of random shapes on a gradient background: distinct scenes are unrelated images."""
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp) * np.ones((1, size, 1))
    img = Image.fromarray(background.astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        w, h = rng.integers(size // 8, size // 2, size=2)
        x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)  # fully visible
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        shape = int(rng.integers(0, 4))
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        elif shape == 2:
            points = [tuple(int(v) for v in rng.integers(0, size, size=2)) for _ in range(3)]
            draw.polygon(points, fill=colour)
        else:
            draw.line(box, fill=colour, width=int(rng.integers(2, 6)))
    noise = rng.normal(0, 6, size=(size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
