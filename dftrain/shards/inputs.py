"""Shard inputs as a user gives them: one or several folders, tars or list files, as one shard set.

Every stage that reads a dataset (`--shards`, evaluate's `--train-shards`, `shard validate/info`)
resolves its values here, so the rules are the same everywhere:

- a value is a shard folder (it must hold manifest.json: a folder without one is refused with the
  reader's message), a `.tar` listed in its folder's manifest (the manifest gives its count and
  sha256; a tar beside no manifest is refused the same way), or a `.txt` list file: one folder or
  tar per line, `#` starts a comment, blank lines are skipped, relative lines are read from the list
  file's folder; a list file does not name other list files;
- the order is kept: the folders' shards in the order given, each folder's in its manifest's order;
- a tar given twice (the same file, or two files with the same sha256) is refused, naming both:
  de-duplicating silently would change the dataset's weighting;
- all sources must be of one kind (train / generalized / latents / objects);
- each shard has a name unique in the set: its manifest name when no two sources share one, else
  `<source number>-<name>` (`0-00000.tar`, `1-00000.tar`); stages that write one output shard per
  input shard (generalize, precompute) use it;
- the set's content digest (`sha256`) covers the kind and every shard's name, count and sha256 in
  order; for a single folder it equals dftrain.fingerprint.shard_folder_sha256, so reuse stays
  keyed on content and a one-folder input keeps its caches.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dftrain.shards.manifest import MANIFEST_NAME, Manifest, ShardError, ShardInfo

LIST_SUFFIX = ".txt"

# The help of every stage's --shards option (dftrain/commands/__init__.py, TrainConfig.shards).
SHARDS_HELP = ("Shard folder (with manifest.json), a .tar it lists, or a .txt list file of those (one a line, "
               "# comments); repeat the option for several.")


@dataclass(frozen=True)
class ShardMember:
    """One tar of a shard set: where it is, its manifest entry, and its name unique in the set."""

    path: Path
    info: ShardInfo
    name: str
    folder: Path


@dataclass(frozen=True)
class ShardSet:
    """The resolved input of a stage: its shards in order, the source folders and their manifests."""

    members: tuple[ShardMember, ...]
    kind: str
    folders: tuple[Path, ...]
    manifests: tuple[Manifest, ...]

    @property
    def paths(self) -> list[Path]:
        return [m.path for m in self.members]

    @property
    def shards(self) -> list[ShardInfo]:
        """Manifest entries under the set's unique names (what a mirrored output's manifest lists)."""
        return [ShardInfo(m.name, m.info.samples, m.info.sha256, m.info.bytes) for m in self.members]

    @property
    def total_samples(self) -> int:
        return sum(m.info.samples for m in self.members)

    @property
    def single_folder(self) -> Path | None:
        """The folder when the set is exactly one whole folder (as before several inputs existed)."""
        if len(self.folders) == 1 and len(self.members) == len(self.manifests[0].shards):
            return self.folders[0]
        return None

    @property
    def extra(self) -> dict[str, Any]:
        """The first manifest's extra (the kinds are equal; latents' settings are checked by the stage)."""
        return self.manifests[0].extra if self.manifests else {}

    def sha256(self) -> str:
        from dftrain.digests import options_sha256

        listed = [[s.name, s.samples, s.sha256] for s in self.shards]
        return options_sha256({"kind": self.kind, "shards": listed})

    def describe(self) -> str:
        """`DIR` or `DIR + 2 more folders`, for messages."""
        first = str(self.folders[0]) if self.folders else "(no shards)"
        more = len(self.folders) - 1
        return first if more <= 0 else f"{first} + {more} more folder{'s' if more > 1 else ''}"

    def by_name(self) -> dict[str, ShardMember]:
        return {m.name: m for m in self.members}

    def tar_of(self, name: str) -> Path:
        """The input tar of the shard the set names `name` (see `shards`)."""
        if "_tars" not in self.__dict__:  # frozen: the lookup is kept in the instance's dict
            self.__dict__["_tars"] = {m.name: m.path for m in self.members}
        return self.__dict__["_tars"][name]


def _as_values(values: str | os.PathLike | Iterable[str | os.PathLike] | ShardSet) -> list[str | os.PathLike]:
    if isinstance(values, str | os.PathLike):
        return [values]
    return list(values)


def expand_inputs(values: str | os.PathLike | Iterable[str | os.PathLike]) -> list[tuple[Path, str]]:
    """(path, where it came from) of every folder or tar, list files read; one-line ShardError on a bad line."""
    out: list[tuple[Path, str]] = []
    for value in _as_values(values):
        path = Path(value)
        if path.suffix.lower() == LIST_SUFFIX:
            out.extend(_read_list_file(path))
        else:
            out.append((path, str(path)))
    if not out:
        raise ShardError("no shard input given (pass --shards DIR, a .tar or a .txt list file)")
    return out


def input_folders(values: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The folders named by shard inputs (a tar's folder for a tar), list files read, each once, in order;
    for the commands that look at folders as they are (`shard validate`, `shard info`)."""
    folders = [path if path.is_dir() or path.suffix != ".tar" else path.parent for path, _ in expand_inputs(values)]
    return list(dict.fromkeys(folders))


def _read_list_file(path: Path) -> list[tuple[Path, str]]:
    if not path.is_file():
        raise ShardError(f"shard list file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ShardError(f"cannot read shard list {path}: {exc}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        where = f"{path} line {number}"
        entry = Path(item) if Path(item).is_absolute() else path.parent / item
        if entry.suffix.lower() == LIST_SUFFIX:
            raise ShardError(f"{where}: {item!r} is a list file; a list names shard folders or .tar files only")
        if not entry.is_dir() and not (entry.suffix == ".tar" and entry.is_file()):
            raise ShardError(f"{where}: {item!r} is neither a shard folder nor a .tar file")
        entries.append((entry, where))
    if not entries:
        raise ShardError(f"shard list {path} names no folder or tar")
    return entries


def shard_set(values: str | os.PathLike | Iterable[str | os.PathLike] | ShardSet) -> ShardSet:
    """The one resolver of shard inputs (see the module docstring)."""
    if isinstance(values, ShardSet):
        return values
    manifests: dict[Path, Manifest] = {}
    picked: list[tuple[Path, ShardInfo, Path, str]] = []  # (tar, entry, folder, where)
    for path, where in expand_inputs(values):
        if path.is_dir():
            manifest = _manifest(path, manifests, where)
            picked.extend((path / s.name, s, path, where) for s in manifest.shards)
        elif path.suffix == ".tar" and path.is_file():
            folder = path.parent
            if not (folder / MANIFEST_NAME).is_file():
                raise ShardError(f"{where}: {path.name} has no {MANIFEST_NAME} beside it: adopt its folder first "
                                 f"(`dftrain shard adopt {folder}`)")
            manifest = _manifest(folder, manifests, where)
            entry = next((s for s in manifest.shards if (folder / s.name).resolve() == path.resolve()), None)
            if entry is None:
                raise ShardError(f"{where}: {path.name} is not listed in {folder / MANIFEST_NAME}")
            picked.append((path, entry, folder, where))
        elif not path.exists():
            raise ShardError(f"shard folder not found: {path}")
        else:
            raise ShardError(f"{where}: neither a shard folder nor a .tar file")
    _refuse_repeats(picked)
    kinds = list(dict.fromkeys(m.kind for m in manifests.values()))
    if len(kinds) > 1:
        raise ShardError(f"shard inputs of different kinds ({', '.join(kinds)}): give folders of one kind")
    folders = list(dict.fromkeys(folder for _, _, folder, _ in picked))
    names = [entry.name for _, entry, _, _ in picked]
    unique = len(set(names)) == len(names)
    members = tuple(
        ShardMember(tar, entry, entry.name if unique else f"{folders.index(folder)}-{entry.name.replace('/', '-')}",
                    folder)
        for tar, entry, folder, _ in picked)
    return ShardSet(members, kinds[0] if kinds else "train", tuple(folders), tuple(manifests[f] for f in folders))


def _manifest(folder: Path, known: dict[Path, Manifest], where: str) -> Manifest:
    if folder not in known:
        try:
            known[folder] = Manifest.load(folder)
        except ShardError as exc:
            raise ShardError(str(exc) if where == str(folder) else f"{where}: {exc}") from None
    return known[folder]


def _refuse_repeats(picked: Sequence[tuple[Path, ShardInfo, Path, str]]) -> None:
    by_file: dict[Path, str] = {}
    by_content: dict[str, str] = {}
    for tar, entry, _, where in picked:
        resolved = tar.resolve()
        if resolved in by_file:
            raise ShardError(f"{tar} is given twice ({by_file[resolved]}; {where}): give each shard once")
        by_file[resolved] = where
        first = by_content.setdefault(entry.sha256, str(tar))
        if first != str(tar):
            raise ShardError(f"{tar} has the same content (sha256) as {first}: give each shard once")
