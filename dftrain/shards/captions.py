"""Captions files for `shard build`, read as a stream: JSONL, CSV/TSV and parquet one record at a time.

Formats (a folder means every captions file in it, in sorted name order, one after the other):
- `.jsonl` / `.ndjson`: {"key", "caption"} or {"key", "captions": [...]} per line;
- `.csv` / `.tsv`: a header naming `key` and `caption` (other columns ignored);
- `.parquet` (needs pyarrow: `pip install 'dftrain[parquet]'`): columns `key` and `caption`, as
  img2dataset writes them (`url` and the rest ignored); a `status` column other than "success"
  marks a failed download, counted, not an error; read in record batches;
- `.json`: {key: caption | [captions]}; one JSON document, so it is read whole (small sets only).

`caption_entries` groups consecutive records of one key (several CSV rows per image) into one entry
and numbers the entries: entry i is the same for every rank, which is how ranks split the work
(dftrain/shards/build.py). Nothing here holds more than one record batch.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dftrain.errors import ConfigError, MissingDependencyError

STREAMED_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")
CAPTION_SUFFIXES = (".json", *STREAMED_SUFFIXES)
PARQUET_BATCH_ROWS = 8192
FAILED_DOWNLOAD = "failed download"
JSON_KEY_TWICE = "key given twice in the JSON object (both kept)"


@dataclass
class CaptionRecord:
    """One record: its key and captions, or the problem that makes it unusable."""

    where: str
    key: str | None
    captions: list[str] | None
    problem: str | None = None  # "missing key", "bad caption entry ...", "invalid JSON ...", FAILED_DOWNLOAD
    source: Path | None = None  # the captions file it came from


@dataclass
class CaptionEntry:
    """Consecutive records of one key merged: entry `index` of the stream."""

    index: int
    key: str | None
    texts: list[str]
    where: str
    problem: str | None = None
    source: Path | None = None
    repeated: list[str] = field(default_factory=list)  # captions given twice for this key (kept once)


def _as_caption_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


def _record(where: str, key: Any, value: Any, source: Path) -> CaptionRecord:
    if not isinstance(key, str | int) or isinstance(key, bool) or str(key) == "":
        return CaptionRecord(where, None, None, "missing key", source)
    captions = _as_caption_list(value)
    if captions is None:
        return CaptionRecord(str(key), str(key), None, "bad caption entry (need a string or a list of strings)",
                             source)
    return CaptionRecord(where, str(key), captions, None, source)


def caption_files(path: str | os.PathLike) -> list[Path]:
    """The captions file, or a folder's captions files in sorted order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in CAPTION_SUFFIXES and p.is_file()
                       and not p.name.startswith("."))
        if not files:
            raise ConfigError(f"captions folder {path} holds no {', '.join(CAPTION_SUFFIXES)} file")
        return files
    if not path.is_file():
        raise ConfigError(f"captions file not found: {path}")
    if path.suffix.lower() not in CAPTION_SUFFIXES:
        raise ConfigError(f"captions file {path}: unknown format {path.suffix!r} "
                          "(use .jsonl, .csv, .tsv, .parquet or .json)")
    return [path]


def iter_caption_records(path: str | os.PathLike) -> Iterator[CaptionRecord]:
    """Every record of a captions file (or folder), in file order, one at a time (see the module docstring)."""
    for file in caption_files(path):
        suffix = file.suffix.lower()
        if suffix == ".json":
            yield from _json_records(file)
        elif suffix in (".jsonl", ".ndjson"):
            yield from _jsonl_records(file)
        elif suffix in (".csv", ".tsv"):
            yield from _csv_records(file, "\t" if suffix == ".tsv" else ",")
        else:
            yield from _parquet_records(file)


def _open_text(file: Path):
    return open(file, encoding="utf-8", newline="")


def _utf8_error(file: Path, exc: UnicodeDecodeError) -> ConfigError:
    return ConfigError(f"captions file {file} is not UTF-8: {exc}")


class _Pairs(list):
    """A JSON object as its (key, value) pairs, so that a key given twice is seen."""


def _json_records(file: Path) -> Iterator[CaptionRecord]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"), object_pairs_hook=_Pairs)
    except UnicodeDecodeError as exc:
        raise _utf8_error(file, exc) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"captions file {file}: invalid JSON ({exc})") from None
    if not isinstance(data, _Pairs):
        raise ConfigError(f"captions file {file}: expected a JSON object {{key: caption or [captions]}}")
    for key, value in data:
        yield _record(f"key {key}", key, value, file)


def _jsonl_records(file: Path) -> Iterator[CaptionRecord]:
    try:
        with _open_text(file) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"line {number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield CaptionRecord(where, None, None, f"invalid JSON ({exc})", file)
                    continue
                if not isinstance(record, dict):
                    yield CaptionRecord(where, None, None, "not a JSON object", file)
                    continue
                yield _record(where, record.get("key"), record.get("captions", record.get("caption")), file)
    except UnicodeDecodeError as exc:
        raise _utf8_error(file, exc) from None


def _csv_records(file: Path, delimiter: str) -> Iterator[CaptionRecord]:
    try:
        with _open_text(file) as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if not reader.fieldnames or "key" not in reader.fieldnames or "caption" not in reader.fieldnames:
                raise ConfigError(f"captions file {file}: the header must name the columns 'key' and 'caption'")
            for number, row in enumerate(reader, start=2):
                yield _record(f"line {number}", row.get("key"), row.get("caption"), file)
    except UnicodeDecodeError as exc:
        raise _utf8_error(file, exc) from None


def _parquet_records(file: Path) -> Iterator[CaptionRecord]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError(f"captions file {file}: reading parquet needs pyarrow "
                                     "(pip install 'dftrain[parquet]'), or give the captions as .jsonl / .csv") from None
    try:
        table = pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises its own error types for a damaged file
        raise ConfigError(f"captions file {file}: not a readable parquet file ({exc})") from None
    names = set(table.schema_arrow.names)
    if not {"key", "caption"} <= names:
        raise ConfigError(f"captions file {file}: needs the columns 'key' and 'caption' (has {sorted(names)})")
    columns = ["key", "caption"] + (["status"] if "status" in names else [])
    row = 0
    for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        values = batch.to_pydict()
        statuses = values.get("status") or [None] * batch.num_rows
        for key, caption, status in zip(values["key"], values["caption"], statuses, strict=True):
            row += 1
            if status is not None and status != "success":
                yield CaptionRecord(str(key), None if key is None else str(key), None, FAILED_DOWNLOAD, file)
            else:
                yield _record(f"row {row}", key, caption, file)


def caption_entries(path: str | os.PathLike) -> Iterator[CaptionEntry]:
    """The records with consecutive repeats of a key merged into one entry, numbered from 0."""
    index = 0
    current: CaptionEntry | None = None
    for record in iter_caption_records(path):
        if not (current is not None and record.problem is None and current.problem is None
                and record.key == current.key and record.source == current.source):
            if current is not None:
                yield current
                index += 1
            current = CaptionEntry(index, record.key, [], record.where, record.problem, record.source)
        elif record.source is not None and record.source.suffix.lower() == ".json":
            current.repeated.append(JSON_KEY_TWICE)  # CSV / JSONL: several rows per key are the format's way
        add_captions(current, record.captions or [], record.where)
    if current is not None:
        yield current


def add_captions(entry: CaptionEntry, captions: list[str], where: str) -> None:
    """Append captions to an entry; one it already holds is noted in `repeated` and kept once."""
    for caption in captions:
        if caption.strip() and caption in entry.texts:
            entry.repeated.append(f"caption given twice ({where})")
        else:
            entry.texts.append(caption)
