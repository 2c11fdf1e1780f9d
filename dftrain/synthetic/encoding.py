"""How synthetic images become sample bytes, shared by the datasets and the experiment regime."""

from __future__ import annotations

import io

from PIL import Image

from dftrain.errors import ConfigError

JPEG_QUALITY = 90


def jpeg_bytes(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def check_size(size: int) -> None:
    if size < 8:
        raise ConfigError(f"size must be >= 8 pixels, got {size}")
