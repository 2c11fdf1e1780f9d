"""How one sample's fields become tar members and back (the webdataset / img2dataset convention).

A sample is a dict: `__key__` plus one entry per field, stored as the member `<key>.<field>`.
Encoding: bytes as is, str as UTF-8, dict/list as UTF-8 JSON, int as ASCII digits (for `cls`).
Decoding (reader side) checks each field and names the problem, so the reader can count and log it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

# Entries the reader adds that a writer must not store (so a read sample can be written back).
READER_ONLY_FIELDS = frozenset({"image"})
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")
# A caption longer than this is bad input (web scrapes carry whole pages in alt text).
MAX_CAPTION_CHARS = 10_000
_FORBIDDEN_KEY_CHARS = set(".\\\n\r\t\0")


class SampleProblem(Exception):
    """A sample cannot be used; `reason` is a short category for counting, the message has details."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def check_key(key: Any) -> str:
    """A key usable as a tar member prefix: non-empty str without dots (webdataset splits at the first dot)."""
    if not isinstance(key, str) or not key or key.startswith("/") or _FORBIDDEN_KEY_CHARS & set(key):
        raise ValueError(f"invalid sample key {key!r}: need a non-empty string without '.', '\\' or whitespace controls")
    if ".." in key.split("/"):
        raise ValueError(f"invalid sample key {key!r}")
    return key


def encode_value(field: str, value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):
        raise TypeError(f"field {field!r}: bool is ambiguous, store it inside the json field")
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")
    raise TypeError(f"field {field!r}: cannot store a {type(value).__name__} (give bytes, str, int, dict or list)")


def encode_sample(sample: dict[str, Any]) -> tuple[str, list[tuple[str, bytes]]]:
    """(key, [(member name, bytes), ...]) in a stable field order; meta entries (`__*__`) are not stored."""
    if "__key__" not in sample:
        raise ValueError("sample has no '__key__'")
    key = check_key(sample["__key__"])
    members = []
    for field in sorted(sample):
        if field.startswith("__") or field in READER_ONLY_FIELDS:
            continue
        if not field or "/" in field or field != field.strip():
            raise ValueError(f"sample {key}: invalid field name {field!r}")
        members.append((f"{key}.{field}", encode_value(field, sample[field])))
    if not members:
        raise ValueError(f"sample {key} has no fields to store")
    return key, members


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/000001.seg.json' -> ('dir/000001', 'seg.json'): the key ends at the first dot of the basename."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def decode_text(field: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleProblem(f"non-utf8 {field}", str(exc)) from None


def decode_image(data: bytes):
    """JPEG/PNG/... bytes -> fully decoded PIL RGB image; SampleProblem when it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        raise SampleProblem("undecodable image", f"{type(exc).__name__}: {exc}") from None


def decode_sample(raw: dict[str, Any], *, require: Iterable[str] = ("jpg", "txt"), decode: bool = True) -> dict:
    """Check and decode one raw sample (field -> bytes); raises SampleProblem naming what is wrong."""
    for field in require:
        if field not in raw:
            raise SampleProblem(f"missing {field}")
    sample: dict[str, Any] = {}
    for field, value in raw.items():
        if field.startswith("__"):
            sample[field] = value
        elif field == "txt":
            text = decode_text(field, value)
            if not text.strip():
                raise SampleProblem("empty txt")
            if len(text) > MAX_CAPTION_CHARS:
                raise SampleProblem("caption too long", f"{len(text)} characters > {MAX_CAPTION_CHARS}")
            sample[field] = text
        elif field == "json":
            try:
                sample[field] = json.loads(decode_text(field, value))
            except json.JSONDecodeError as exc:
                raise SampleProblem("bad json", str(exc)) from None
        elif field == "cls":
            try:
                sample[field] = int(value.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                raise SampleProblem("bad cls", repr(value[:32])) from None
        else:
            sample[field] = value
    if decode:
        image_field = next((f for f in IMAGE_FIELDS if f in raw), None)
        if image_field is not None:
            sample["image"] = decode_image(raw[image_field])
    return sample
