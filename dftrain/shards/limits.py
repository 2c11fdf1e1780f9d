"""The one limit policy of every shard reader and writer: member size, image pixels, caption bytes.

The same `Limits` is applied by `shard build`, `shard validate` and the reader that train,
precompute, generalize, score, generate and evaluate use, so a sample one stage accepts every
stage accepts. What exceeds a limit is a counted skip with the sample key (or an error in strict
mode), decided from headers before the data is read or decoded:

- max_member_bytes: one tar member (one field of one sample) and one input image file. Checked on
  the tar header, so a member that claims 50 GiB (or a sparse 2 GiB one) is never read.
- max_pixels: width x height from the image header, checked before decoding. The default is well
  under PIL's own bomb limit (89.5 M pixels warns, 179 M refuses); a 631-byte JPEG can claim
  13000 x 13000 pixels and would decode to 500 MB.
- max_caption_bytes: UTF-8 bytes of a caption (`txt`, and each caption `shard build` stores).

Defaults can be raised or lowered for a whole run with `dftrain --max-pixels N ... COMMAND` (the
global options set the DFTRAIN_MAX_* environment variables, which child processes inherit).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from dftrain.errors import ConfigError

ENV_PREFIX = "DFTRAIN_"


class SampleProblem(Exception):
    """A sample cannot be used; `reason` is a short category for counting, the message has details."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    max_member_bytes: int = 64 * 2**20  # 64 MiB: a large JPEG is a few MB; latents are < 1 MB
    max_pixels: int = 2**25  # 33.5 M pixels (e.g. 8192 x 4096); PIL warns at 89.5 M
    max_caption_bytes: int = 10_000  # alt texts of web scrapes can hold whole pages

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"limit {item.name} must be a positive integer, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Defaults, overridden by DFTRAIN_MAX_MEMBER_BYTES / DFTRAIN_MAX_PIXELS / DFTRAIN_MAX_CAPTION_BYTES."""
        environ = os.environ if environ is None else environ
        values = {}
        for item in fields(cls):
            name = ENV_PREFIX + item.name.upper()
            if environ.get(name):
                try:
                    values[item.name] = int(environ[name])
                except ValueError:
                    raise ConfigError(f"{name} must be an integer, got {environ[name]!r}") from None
        return cls(**values)

    def env(self) -> dict[str, str]:
        """The environment variables that give these limits to child processes."""
        return {ENV_PREFIX + name.upper(): str(value) for name, value in asdict(self).items()}

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    # -- checks: each raises SampleProblem(reason, detail) -------------------------------------
    def check_member(self, name: str, size: int) -> None:
        if size > self.max_member_bytes:
            raise SampleProblem("member too large",
                                f"{name}: {size} bytes > max_member_bytes {self.max_member_bytes}")

    def check_caption(self, data: bytes | str, field: str = "txt") -> None:
        size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        if size > self.max_caption_bytes:
            raise SampleProblem("caption too long",
                                f"{field}: {size} bytes > max_caption_bytes {self.max_caption_bytes}")

    def check_pixels(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise SampleProblem("image too large",
                                f"{width}x{height} = {width * height} pixels > max_pixels {self.max_pixels}")

    def open_image(self, data: bytes):
        """PIL image with only its header read, after the pixel check (the caller loads it)."""
        from PIL import Image

        size = header_size(data)
        if size is not None:
            self.check_pixels(*size)  # before PIL sees it: no bomb warning for what we refuse anyway
        try:
            if size is None or self.max_pixels > Image.MAX_IMAGE_PIXELS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we decide ourselves
                    img = Image.open(io.BytesIO(data))
            else:
                img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise SampleProblem("image too large", str(exc)) from None
        except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
            raise SampleProblem("undecodable image", f"{type(exc).__name__}: {exc}") from None
        if size is None:
            try:
                self.check_pixels(*img.size)
            except SampleProblem:
                img.close()
                raise
        return img

    def check_image_header(self, data: bytes) -> tuple[int, int]:
        """(width, height) from the header; SampleProblem when not an image or too large. Decodes nothing.

        JPEG and PNG headers are read directly (PIL's open costs as much as decoding a 64-px JPEG);
        other formats, and headers this parser does not follow, go through PIL.
        """
        size = header_size(data)
        if size is None:
            with self.open_image(data) as img:
                return img.size
        self.check_pixels(*size)
        return size

    def decode_image(self, data: bytes):
        """Fully decoded PIL RGB image, refused from its header when too large."""
        img = self.open_image(data)
        try:
            img.load()
            return img.convert("RGB")
        except Exception as exc:  # truncated or corrupt data past the header
            raise SampleProblem("undecodable image", f"{type(exc).__name__}: {exc}") from None
        finally:
            img.close()


def current_limits() -> Limits:
    """The limits of this process (defaults unless DFTRAIN_MAX_* say otherwise)."""
    return Limits.from_env()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic), which carry the size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # markers without a length field


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG (its frame header) or PNG (IHDR) without PIL; None when not found."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == 0xDA or marker == 0xD9:  # scan or end before any frame header
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                return None
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return (width, height) if width and height else None  # height 0: defined later (DNL)
        if length < 2:
            return None
        pos += 2 + length
    return None
