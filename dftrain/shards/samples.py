"""How one sample's fields become tar members and back (the webdataset / img2dataset convention).

A sample is a dict: `__key__` plus one entry per field, stored as the member `<key>.<field>`.
Encoding: bytes as is, str as UTF-8, dict/list as UTF-8 JSON, int as ASCII digits (for `cls`).
Decoding (reader side) checks each field and names the problem, so the reader can count and log it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from dftrain.shards.limits import SampleProblem, current_limits

# Entries the reader adds that a writer must not store (so a read sample can be written back).
READER_ONLY_FIELDS = frozenset({"image"})
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")
# '.' ends a key in webdataset; '\\' is a Windows separator; control characters corrupt logs and names.
_FORBIDDEN_KEY_CHARS = frozenset(".\\" + "".join(map(chr, range(32))) + "\x7f")


def key_problem(key: Any) -> str | None:
    """Why `key` is unsafe as a sample key (it becomes a file name in every stage), or None."""
    if not isinstance(key, str) or not key:
        return "empty key"
    if key.startswith("/"):
        return "absolute path"
    bad = _FORBIDDEN_KEY_CHARS.intersection(key)
    if bad:
        return "forbidden characters " + ", ".join(sorted(repr(c) for c in bad))
    if "" in key.split("/"):
        return "empty path component"
    return None


def check_key(key: Any) -> str:
    """A key usable as a tar member prefix and a relative file name: non-empty, relative, no '.' (so
    no '..'), no backslash or control characters, no empty path component. ValueError otherwise."""
    problem = key_problem(key)
    if problem is not None:
        raise ValueError(f"invalid sample key {key!r}: {problem}")
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
    folder, slash, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if slash else stem  # '/x.jpg' keeps its '/': the key check refuses it
    return key, ext.lower() if dot else ""


def decode_text(field: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleProblem(f"non-utf8 {field}", str(exc)) from None


def decode_image(data: bytes, limits=None):
    """JPEG/PNG/... bytes -> fully decoded PIL RGB image; SampleProblem when it cannot be decoded or
    its header claims more pixels than the limits allow (checked before decoding)."""
    return _limits(limits).decode_image(data)


def _limits(limits):
    return limits if limits is not None else current_limits()


def decode_sample(raw: dict[str, Any], *, require: Iterable[str] = ("jpg", "txt"), decode: bool = True,  # noqa: C901 (predates the complexity rule)
                  limits=None) -> dict:
    """Check and decode one raw sample (field -> bytes); raises SampleProblem naming what is wrong.

    The limits (dftrain.shards.limits) apply with or without `decode`: the caption's size, and the
    image header's pixel count (decode=False reads the header only, so every stage skips the same
    samples).
    """
    limits = _limits(limits)
    for field in require:
        if field not in raw:
            raise SampleProblem(f"missing {field}")
    sample: dict[str, Any] = {}
    for field, value in raw.items():
        if field.startswith("__"):
            sample[field] = value
        elif field == "txt":
            limits.check_caption(value)
            text = decode_text(field, value)
            if not text.strip():
                raise SampleProblem("empty txt")
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
    image_field = next((f for f in IMAGE_FIELDS if f in raw), None)
    if image_field is not None:
        if decode:
            sample["image"] = limits.decode_image(raw[image_field])
        else:
            limits.check_image_header(raw[image_field])
    return sample
