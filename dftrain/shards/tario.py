"""Read a webdataset tar sample by sample, and notice damage instead of stopping quietly.

Python's tarfile treats a bad header after the first one as the end of the archive, and a tar
cut at a member boundary just ends early. So after the last member we check that the rest of the
file is the end-of-archive marker (zero blocks); anything else means the tar is damaged, and the
caller learns it through a `TarDamage` event after the good samples before the damage.

Sizes are checked on the headers before anything is read (dftrain.shards.limits): a member over
max_member_bytes is not read and its sample comes out with `problem` set; an extension header
(pax, GNU long name) that claims more than MAX_EXTENSION_HEADER_BYTES is damage, because tarfile
would read it whole into memory.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dftrain.shards.limits import Limits, current_limits
from dftrain.shards.samples import SampleProblem, split_member_name

_BLOCK = 512
# pax records and GNU long names are a few hundred bytes; tarfile reads these headers whole.
MAX_EXTENSION_HEADER_BYTES = 1 << 20
_EXTENSION_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


@dataclass
class RawSample:
    key: str
    fields: dict[str, bytes]
    problem: SampleProblem | None = None  # set when a member broke a limit (its data was not read)


@dataclass
class TarDamage:
    """The tar is damaged from here on; `key` is the sample being read when it broke (if any)."""

    detail: str
    key: str | None = None


@dataclass
class DuplicateKey:
    """A key appeared twice in one tar (not consecutively); the second occurrence is dropped."""

    key: str


def _tail_is_end_marker(handle, offset: int, size: int) -> bool:
    """True when the bytes from `offset` to the end are >= 2 zero blocks (a properly closed tar)."""
    remaining = size - offset
    if remaining < 2 * _BLOCK:
        return False
    handle.seek(offset)
    while chunk := handle.read(1 << 16):
        if chunk.count(0) != len(chunk):
            return False
    return True


def _check_extension_headers(fd: int, offset: int) -> None:
    """Raise EOFError when the extension headers starting at `offset` claim too many bytes."""
    for _ in range(8):  # a chain of extension headers is short; tarfile reports longer ones itself
        block = os.pread(fd, _BLOCK, offset)
        if len(block) < _BLOCK or block[156:157] not in _EXTENSION_TYPES:
            return
        try:
            size = tarfile.nti(block[124:136])
        except tarfile.TarError:
            return  # tarfile reports the bad header
        if size > MAX_EXTENSION_HEADER_BYTES:
            raise EOFError(f"extension header at byte {offset} claims {size} bytes "
                           f"(> {MAX_EXTENSION_HEADER_BYTES}); not read")
        offset += _BLOCK + -(-size // _BLOCK) * _BLOCK


def iter_tar(path: str | os.PathLike, limits: Limits | None = None) -> Iterator[RawSample | TarDamage | DuplicateKey]:  # noqa: C901 (predates the complexity rule)
    """Yield RawSample per key (consecutive members grouped), then TarDamage if the tar is damaged."""
    limits = limits or current_limits()
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        yield TarDamage(f"cannot open: {exc}")
        return
    with handle:
        size = os.fstat(handle.fileno()).st_size
        current: RawSample | None = None
        current_is_duplicate = False
        seen: set[str] = set()
        try:
            _check_extension_headers(handle.fileno(), 0)
            tar = tarfile.open(fileobj=handle, mode="r:")
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield TarDamage(f"not a readable tar: {exc}")
            return
        try:
            while True:
                _check_extension_headers(handle.fileno(), tar.offset)
                member = tar.next()
                if member is None:
                    break
                if not member.isfile():
                    continue
                key, field = split_member_name(member.name)
                if current is not None and key != current.key:
                    if not current_is_duplicate:
                        yield current
                    current = None
                if current is None:
                    current = RawSample(key, {})
                    current_is_duplicate = key in seen
                    if current_is_duplicate:
                        yield DuplicateKey(key)
                    seen.add(key)
                if current.problem is not None:
                    continue  # the sample is skipped: do not read its other members
                try:
                    limits.check_member(member.name, member.size)
                except SampleProblem as problem:
                    current.problem = problem
                    current.fields.clear()
                    continue
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted is not None else b""
                if len(data) != member.size:
                    raise EOFError(f"member {member.name} is cut short ({len(data)} of {member.size} bytes)")
                current.fields[field] = data
            end_offset = tar.offset
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            if current is not None and current.problem is not None and not current_is_duplicate:
                yield current  # e.g. a member claiming more bytes than the file holds: name the real cause
                current = None
            yield TarDamage(f"{type(exc).__name__}: {exc}", key=current.key if current is not None else None)
            return
        if not _tail_is_end_marker(handle, end_offset, size):
            # The last group may be incomplete too (cut at a member boundary): report it as damaged.
            yield TarDamage(
                f"no end-of-archive marker after byte {end_offset} of {size} (truncated or damaged header)",
                key=current.key if current is not None else None,
            )
            return
        if current is not None and not current_is_duplicate:
            yield current
