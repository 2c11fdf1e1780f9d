"""The caption table of `--dedup global`: every distinct caption of a shard folder, on disk, in parts.

    OUT/.generalize/table/runs/<shard>.jsonl     pass 1 (collect): one input shard's distinct captions,
                                                 sorted by key, lines [key, caption, count]
    OUT/.generalize/table/runs/<shard>.json      its receipt: work key, sha256, byte offset of each part
    OUT/.generalize/table/parts/part-NNNNN.sqlite pass 2 (generalize): part NNNNN's captions and their
                                                 results (key -> caption, count, result)
    OUT/.generalize/table/parts/part-NNNNN.json  its receipt

A caption's key is the sha256 of its normalized text (whitespace runs collapsed, ends stripped: the
text the LLM sees and the one that is judged); its part is fixed by the key's leading bits, so every
run is cut into parts by byte ranges, and part p of the table is the union of range p of every run.
Memory stays bounded by one shard (pass 1) and one part (pass 2); pass 3 looks captions up by key.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from dftrain.generalize.receipts import RECEIPT_DIR

TABLE_DIR = f"{RECEIPT_DIR}/table"


def normalize_caption(caption: str) -> str:
    return " ".join(caption.split())


def caption_key(normalized: str) -> str:
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def part_of(key: str, parts: int) -> int:
    """The part of a key: its leading 32 bits scaled to [0, parts), so sorted keys give contiguous parts."""
    return (int(key[:8], 16) * parts) >> 32


def runs_dir(out_dir: Path) -> Path:
    return out_dir / TABLE_DIR / "runs"


def parts_dir(out_dir: Path) -> Path:
    return out_dir / TABLE_DIR / "parts"


def part_name(index: int) -> str:
    return f"part-{index:05d}"


# --------------------------------------------------------------------------- runs (pass 1)


def encode_run(captions: Iterable[str], parts: int) -> tuple[bytes, list[int], list[int]]:
    """A shard's captions -> (run bytes sorted by key, byte offset where each part starts + the end,
    samples per part)."""
    counts: dict[str, list] = {}
    for caption in captions:
        text = normalize_caption(caption)
        entry = counts.setdefault(caption_key(text), [text, 0])
        entry[1] += 1
    lines, offsets, samples, size = [], [], [0] * parts, 0
    for key in sorted(counts):
        part = part_of(key, parts)
        while len(offsets) <= part:
            offsets.append(size)
        text, count = counts[key]
        samples[part] += count
        line = (json.dumps([key, text, count], ensure_ascii=False) + "\n").encode("utf-8")
        lines.append(line)
        size += len(line)
    offsets += [size] * (parts + 1 - len(offsets))
    return b"".join(lines), offsets, samples


def read_run_part(path: Path, offsets: list[int], part: int) -> Iterator[tuple[str, str, int]]:
    """(key, caption, count) of one part of one run: one seek and one read."""
    start, end = offsets[part], offsets[part + 1]
    if end <= start:
        return
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    for line in data.decode("utf-8").splitlines():
        key, text, count = json.loads(line)
        yield key, text, int(count)


def merge_part(run_slices: Iterable[Iterable[tuple[str, str, int]]]) -> dict[str, list]:
    """key -> [caption, total count] over the slices of every run, in key order."""
    merged: dict[str, list] = {}
    for rows in run_slices:
        for key, text, count in rows:
            entry = merged.setdefault(key, [text, 0])
            entry[1] += count
    return dict(sorted(merged.items()))


def table_digest(keys: Iterable[str]) -> str:
    """What a part's captions are (the keys decide the texts): the content half of its work key."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode("ascii") + b"\n")
    return digest.hexdigest()


# --------------------------------------------------------------------------- results (pass 2)


def write_results(path: Path, rows: Iterable[tuple[str, str, int, dict]]) -> None:
    """(key, caption, count, result) rows into a new SQLite file, renamed into place when complete."""
    from dftrain.files import atomic_path

    with atomic_path(path) as tmp:
        with sqlite3.connect(tmp) as db:
            db.execute("CREATE TABLE results (key TEXT PRIMARY KEY, caption TEXT NOT NULL, count INTEGER NOT NULL,"
                       " result TEXT NOT NULL) WITHOUT ROWID")
            db.executemany("INSERT INTO results VALUES (?, ?, ?, ?)",
                           ((k, c, n, json.dumps(r, sort_keys=True)) for k, c, n, r in rows))
        db.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())


class ResultsReader:
    """Looks captions up in the parts' SQLite files (read-only), one connection per part, opened lazily."""

    def __init__(self, folder: Path, parts: int):
        self.folder, self.parts = folder, parts
        self._open: dict[int, sqlite3.Connection] = {}

    def _db(self, part: int) -> sqlite3.Connection:
        if part not in self._open:
            path = self.folder / f"{part_name(part)}.sqlite"
            self._open[part] = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        return self._open[part]

    def lookup(self, keys: Iterable[str]) -> dict[str, dict]:
        """key -> result for every key found."""
        by_part: dict[int, list[str]] = {}
        for key in set(keys):
            by_part.setdefault(part_of(key, self.parts), []).append(key)
        found = {}
        for part, wanted in sorted(by_part.items()):
            for start in range(0, len(wanted), 500):  # below SQLite's limit of bound parameters
                chunk = wanted[start:start + 500]
                query = f"SELECT key, result FROM results WHERE key IN ({','.join('?' * len(chunk))})"
                found.update((k, json.loads(r)) for k, r in self._db(part).execute(query, chunk))
        return found

    def close(self) -> None:
        for db in self._open.values():
            db.close()
        self._open.clear()


def read_all_results(path: Path) -> dict[str, dict]:
    """key -> result of one part's file (to reuse earlier results when a part's captions changed)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {k: json.loads(r) for k, r in db.execute("SELECT key, result FROM results")}
    finally:
        db.close()
