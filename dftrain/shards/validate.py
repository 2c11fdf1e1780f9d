"""`dftrain shard validate`: check every tar against the manifest and decode every sample.

Samples are checked exactly as every reader checks them (same keys rule, same limits:
dftrain.shards.limits), so what validate passes no stage skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dftrain.files import TMP_SUFFIX
from dftrain.shards.limits import Limits, current_limits
from dftrain.shards.manifest import MANIFEST_NAME, Manifest, ShardError, sha256_file
from dftrain.shards.samples import SampleProblem, decode_sample, key_problem
from dftrain.shards.tario import DuplicateKey, RawSample, TarDamage, iter_tar

# Fields each kind of dataset must have in every sample.
REQUIRED_FIELDS = {
    "train": ("jpg", "txt"),
    "generalized": ("jpg", "txt"),
    "objects": ("jpg", "cls"),
}


@dataclass(frozen=True)
class Problem:
    shard: str
    key: str | None
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        where = self.shard + (f" sample {self.key}" if self.key else "")
        return f"{where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class ValidationReport:
    folder: Path
    kind: str = ""
    shards_expected: int = 0
    shards_ok: int = 0
    samples_expected: int = 0
    samples_ok: int = 0
    bytes_expected: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "folder": str(self.folder),
            "kind": self.kind,
            "shards_expected": self.shards_expected,
            "shards_ok": self.shards_ok,
            "samples_expected": self.samples_expected,
            "samples_ok": self.samples_ok,
            "bytes": self.bytes_expected,
            "problems": [str(p) for p in self.problems],
            "warnings": list(self.warnings),
            "ok": self.ok,
        }


def check_shard_samples(
    path: Path, expected_samples: int | None, require: Sequence[str], seen_keys: dict[str, str],
    add: Callable[..., None], limits: Limits,
) -> tuple[int, int, bool]:
    """Decode every sample of one tar as every reader would: (good samples, samples found, damaged).

    Each problem goes to `add(shard, key, reason, detail)`; expected_samples=None skips the count check.
    """
    good = 0
    samples_found = 0
    damaged = False
    for event in iter_tar(path, limits):
        if isinstance(event, TarDamage):
            add(path.name, event.key, "corrupt tar", event.detail)
            damaged = True
        elif isinstance(event, DuplicateKey):
            add(path.name, event.key, "duplicate key", "appears twice in this tar")
        elif isinstance(event, RawSample):
            samples_found += 1
            unsafe = key_problem(event.key)
            if unsafe is not None:
                add(path.name, repr(event.key), "unsafe key", unsafe)
                continue
            if event.problem is not None:
                add(path.name, event.key, event.problem.reason, event.problem.detail)
                continue
            if event.key in seen_keys:
                add(path.name, event.key, "duplicate key", f"also in {seen_keys[event.key]}")
                continue
            seen_keys[event.key] = path.name
            try:
                decode_sample(event.fields, require=require, decode=True, limits=limits)
            except SampleProblem as problem:
                add(path.name, event.key, problem.reason, problem.detail)
                continue
            good += 1
    if not damaged and expected_samples is not None and samples_found != expected_samples:
        add(path.name, None, "sample count mismatch", f"manifest says {expected_samples}, tar has {samples_found}")
    return good, samples_found, damaged


def validate(  # noqa: C901 (predates the complexity rule)
    folder: str | os.PathLike,
    *,
    strict: bool = False,
    require: Sequence[str] | None = None,
    on_shard: Callable[[str], None] | None = None,
    limits: Limits | None = None,
) -> ValidationReport:
    """Check manifest, every tar (exists, size, sha256, sample count) and every sample (decodes, safe
    key, within the limits; None: this process's limits).

    strict=True raises ShardError at the first problem. `on_shard(name)` is called after each tar
    (for a progress bar).
    """
    folder = Path(folder)
    limits = limits or current_limits()
    report = ValidationReport(folder)

    def add(shard: str, key: str | None, reason: str, detail: str = "") -> None:
        problem = Problem(shard, key, reason, detail)
        if strict:
            raise ShardError(f"strict mode: {folder}: {problem}")
        report.problems.append(problem)

    try:
        manifest = Manifest.load(folder)
    except ShardError as exc:
        add(MANIFEST_NAME, None, "invalid manifest", str(exc))
        return report
    report.kind = manifest.kind
    report.shards_expected = len(manifest.shards)
    report.samples_expected = manifest.total_samples
    report.bytes_expected = manifest.total_bytes
    required = tuple(require) if require is not None else REQUIRED_FIELDS.get(manifest.kind, ())

    built_with = manifest.extra.get("limits")
    if isinstance(built_with, dict):
        looser = {k: v for k, v in built_with.items() if isinstance(v, int) and v > getattr(limits, k, v)}
        if looser:
            report.warnings.append(
                "built with larger limits than this check uses (" +
                ", ".join(f"{k} {v} > {getattr(limits, k)}" for k, v in sorted(looser.items())) +
                "): pass the same dftrain --max-* options to every stage")

    listed = {shard.name for shard in manifest.shards}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(TMP_SUFFIX):
            report.warnings.append(f"{path.name}: temporary file of an interrupted write (ignored)")
        elif path.suffix == ".tar" and path.name not in listed:
            report.warnings.append(f"{path.name}: tar not listed in the manifest (ignored by readers)")

    seen_keys: dict[str, str] = {}
    for shard in manifest.shards:
        path = folder / shard.name
        problems_before = len(report.problems)
        if not path.is_file():
            add(shard.name, None, "missing shard", "listed in the manifest but not found")
        else:
            size = path.stat().st_size
            if size != shard.bytes:
                add(shard.name, None, "size mismatch", f"manifest says {shard.bytes} bytes, file has {size}")
            digest = sha256_file(path)
            if digest != shard.sha256:
                add(shard.name, None, "sha256 mismatch", f"manifest {shard.sha256[:12]}..., file {digest[:12]}...")
            report.samples_ok += check_shard_samples(path, shard.samples, required, seen_keys, add, limits)[0]
        if len(report.problems) == problems_before:
            report.shards_ok += 1
        if on_shard is not None:
            on_shard(shard.name)
    return report
