"""Output folders: who made them, one writer at a time, and one-line errors for full or read-only disks.

Every stage that writes a folder wraps the write in `claim_output`:

    with claim_output(out, "shard build", overwrite=overwrite):
        ...  # write into out

- Ownership: a folder dftrain made holds `.dftrain-output.json` naming the stage that made it.
  An existing folder that is not empty and has no marker (someone's data), or whose marker names
  another stage, is refused unless `overwrite=True`: nothing in it is touched. (A folder an earlier
  dftrain wrote before markers existed, recognised by its dftrain manifest or its stage records,
  counts as dftrain's.)
- One writer: `.dftrain-lock` (`.dftrain-lock.<scope>` for stages whose ranks share a folder,
  one scope per rank) is held with flock(2) for the whole write, so a second process writing the
  same output stops with one line instead of deleting the first one's files. A clean exit
  removes the lock file; the kernel drops the lock of a holder that dies, and the lock file it
  leaves (with its pid) tells the next run that it inherits a dead run's temporary files, which
  it removes (`temp_patterns`).
- Disks: an OSError for a full, read-only or forbidden disk (errno ENOSPC, EDQUOT, EFBIG, EROFS,
  EACCES, EPERM) leaving the block becomes OutputError, one line naming the path. Other OSErrors
  are bugs or input problems and pass through unchanged.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dftrain.errors import DftrainError

log = logging.getLogger("dftrain.outputs")

MARKER_NAME = ".dftrain-output.json"
LOCK_NAME = ".dftrain-lock"
# Temporary names dftrain's writers use: `x.tmp`, `.x.<random>.tmp`, `x.tmp<pid>`, `.x.tmp<pid>`.
# The help of every stage's --overwrite (a Typer option in dftrain/commands, a field in the typed option models).
OVERWRITE_HELP = ("Write into a folder dftrain did not create (or made by another stage), replacing dftrain's files "
                  "there; and redo work that is already done.")
DEFAULT_TEMP_PATTERNS = ("*.tmp", ".*.tmp", "*.tmp[0-9]*", ".*.tmp[0-9]*")
# errno values that mean "this disk cannot take the write", not a bug.
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this disk or limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class OutputError(DftrainError):
    """An output folder cannot be used: not ours, busy, read-only, full."""


def disk_error_message(exc: OSError, folder: str | os.PathLike | None = None) -> str | None:
    """A one-line description of a disk OSError naming the path, or None if `exc` is not one."""
    if exc.errno not in DISK_ERRNOS:
        return None
    path = exc.filename if exc.filename is not None else (folder if folder is not None else "the output")
    verb = "access" if exc.errno in (errno.EACCES, errno.EPERM) else "write"  # permissions: read or write
    return f"cannot {verb} {path}: {DISK_ERRNOS[exc.errno]} ({errno.errorcode.get(exc.errno, exc.errno)})"


def _entries(folder: Path) -> list[str]:
    """What a folder holds besides dftrain's own lock files."""
    return [name for name in os.listdir(folder) if not name.startswith(LOCK_NAME)]


def read_marker(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / MARKER_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError):
        return {"stage": "?"}  # a damaged marker still says dftrain made the folder
    return data if isinstance(data, dict) else {"stage": "?"}


def check_output_folder(folder: str | os.PathLike, stage: str, *, overwrite: bool = False) -> None:
    """Refuse a folder that holds something dftrain's `stage` did not write (unless overwrite)."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputError(f"{folder} exists and is not a folder; choose another output path")
    marker = read_marker(folder)
    if overwrite:
        return
    if marker is None:
        if _entries(folder) and not _made_by_older_dftrain(folder):
            raise OutputError(
                f"{folder} already holds files that dftrain did not write (no {MARKER_NAME}); "
                "choose an empty or new folder, or pass --overwrite to let dftrain replace its files")
        return
    made_by = marker.get("stage")
    if made_by != stage:
        raise OutputError(
            f"{folder} was made by `dftrain {made_by}`, not `dftrain {stage}`; "
            "choose another folder, or pass --overwrite")


def _made_by_older_dftrain(folder: Path) -> bool:
    """A folder an earlier dftrain wrote before markers existed: a dftrain manifest, or a run's stage records."""
    if (folder / ".stages").is_dir():
        return True
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(manifest, dict) and "schema_version" in manifest and \
        str(manifest.get("command", "")).startswith("dftrain")


def write_marker(folder: Path, stage: str) -> None:
    from dftrain.files import atomic_write_bytes

    body = {"stage": stage, "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat()}
    atomic_write_bytes(folder / MARKER_NAME, (json.dumps(body) + "\n").encode("utf-8"))


@dataclass
class OutputClaim:
    """A folder held by this process: `inherited` names the dead run whose temp files were removed."""

    folder: Path
    stage: str
    lock_path: Path
    inherited: str | None = None
    removed: tuple[Path, ...] = ()


def _holder_text() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname()})


def _describe_holder(text: str) -> str:
    try:
        data = json.loads(text)
        return f"pid {data['pid']} on {data['host']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


def _acquire(lock_path: Path, folder: Path) -> tuple[int, str]:
    """flock the lock file; returns (fd, what a dead holder left in it). OutputError when busy."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise OutputError(
                f"{folder} is being written by another dftrain process ({holder}); "
                "wait for it to finish or choose another output folder") from None
        except OSError:
            os.close(fd)
            raise
        try:
            same_file = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder released (and removed) this file between our open and flock: retry
    previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    os.ftruncate(fd, 0)
    os.pwrite(fd, _holder_text().encode("utf-8"), 0)
    return fd, previous


def _release(fd: int, lock_path: Path) -> None:
    """Remove the lock file, then drop the lock: a lock file found later was left by a dead run."""
    try:
        lock_path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def remove_temp_files(folder: Path, patterns: Iterable[str]) -> list[Path]:
    """Delete files matching `patterns` (globs relative to `folder`); returns what was removed."""
    removed = []
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.is_file() and not path.name.startswith(LOCK_NAME):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@contextmanager
def disk_errors(folder: str | os.PathLike | None = None) -> Iterator[None]:
    """Turn a disk OSError (full, read-only, forbidden) raised inside the block into OutputError."""
    try:
        yield
    except OSError as exc:
        message = disk_error_message(exc, folder)
        if message is None:
            raise
        raise OutputError(message) from exc


def mark_output(folder: str | os.PathLike, stage: str, *, overwrite: bool = False) -> Path:
    """Check and create an output folder and mark it as `stage`'s, without a lock (for a folder whose
    writers coordinate finer-grained locks themselves, e.g. `dftrain reproduce`)."""
    folder = Path(folder)
    with disk_errors(folder):
        check_output_folder(folder, stage, overwrite=overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        if overwrite or read_marker(folder) is None:
            write_marker(folder, stage)
    return folder


TempFiles = Iterable[str] | Callable[[Path], Iterable[Path]]


@contextmanager
def claim_output(folder: str | os.PathLike, stage: str, *, overwrite: bool = False, scope: str | None = None,
                 temp_patterns: TempFiles | None = None) -> Iterator[OutputClaim]:
    """Check, create and lock an output folder for the duration of the block (see the module docstring).

    scope: one lock per scope (e.g. "rank3") for stages whose ranks write one folder together.
    temp_patterns: this writer's temporary files, removed when the lock is taken (a dead run's):
    globs relative to the folder, or a function folder -> paths; default: every dftrain temporary
    name for an unscoped claim, none for a scoped one.
    """
    folder = Path(folder)
    if temp_patterns is None:
        temp_patterns = () if scope else DEFAULT_TEMP_PATTERNS
    with disk_errors(folder):
        check_output_folder(folder, stage, overwrite=overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        lock_path = folder / (LOCK_NAME + (f".{scope}" if scope else ""))
        fd, previous = _acquire(lock_path, folder)
        try:
            claim = OutputClaim(folder, stage, lock_path)
            if previous:
                claim.inherited = _describe_holder(previous)
            if callable(temp_patterns):
                leftovers = [p for p in temp_patterns(folder) if p.is_file()]
                for path in leftovers:
                    path.unlink(missing_ok=True)
                claim.removed = tuple(leftovers)
            else:
                claim.removed = tuple(remove_temp_files(folder, temp_patterns))
            if claim.removed:
                log.warning("removed %d temporary file(s) of an interrupted run in %s%s", len(claim.removed), folder,
                            f" ({claim.inherited})" if claim.inherited else "")
            if overwrite or read_marker(folder) is None:
                write_marker(folder, stage)
            yield claim
        finally:
            _release(fd, lock_path)
