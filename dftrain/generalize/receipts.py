"""Per-shard receipts and the manifest of a generalized shard folder.

A receipt `OUT/.generalize/<shard>.json` is written (atomically) after its output shard
has been renamed into place: it holds the shard's sha256, size and sample count, the
settings it was made with and its statistics. A shard counts as finished only when its
receipt matches the tar on disk. The manifest is assembled from the receipts once every
input shard has one, by whichever rank finds that first, or by `--finalize`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from dftrain.errors import ConfigError, DftrainError

log = logging.getLogger("dftrain.generalize")

RECEIPT_DIR = ".generalize"
MANIFEST_KIND = "generalized"


def receipt_path(out_dir: Path, shard_name: str) -> Path:
    return out_dir / RECEIPT_DIR / f"{shard_name}.json"


def read_receipt(out_dir: Path, shard_name: str) -> dict | None:
    path = receipt_path(out_dir, shard_name)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        log.warning("ignoring unreadable receipt %s (the shard will be redone)", path)
        return None
    return data if isinstance(data, dict) else None


def write_receipt(out_dir: Path, shard_name: str, data: dict) -> None:
    from dftrain.shards.manifest import atomic_write_bytes

    path = receipt_path(out_dir, shard_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def shard_is_done(out_dir: Path, shard_name: str, settings: dict, *, verify_sha: bool = True) -> bool:
    """True when the output shard exists, matches its receipt, and was made under `settings` (a dict).

    A finished shard made under other settings is an error: the user picks a new --out or --overwrite.
    """
    from dftrain.shards import sha256_file

    receipt = read_receipt(out_dir, shard_name)
    tar = out_dir / shard_name
    if receipt is None or not tar.is_file():
        return False
    if receipt.get("settings") != settings:
        raise ConfigError(
            f"{tar} was generalized with other settings ({receipt.get('settings')}); "
            "use another --out, the same settings, or --overwrite")
    if tar.stat().st_size != receipt.get("bytes"):
        log.warning("%s does not match its receipt (size); redoing it", tar)
        return False
    if verify_sha and sha256_file(tar) != receipt.get("sha256"):
        log.warning("%s does not match its receipt (sha256); redoing it", tar)
        return False
    return True


def input_shards(in_dir: Path) -> list:
    """The input manifest's shard list (ShardInfo) in order."""
    from dftrain.shards import Manifest

    return list(Manifest.load(in_dir).shards)


def finalize(in_dir: Path, out_dir: Path, *, command: str = "", require_all: bool = True) -> bool:
    """Write OUT/manifest.json when every input shard has a finished output shard.

    Returns False (or raises DftrainError with require_all) when some are missing.
    """
    from dftrain.shards import Manifest, ShardInfo

    names = [s.name for s in input_shards(in_dir)]
    receipts = {name: read_receipt(out_dir, name) for name in names}
    missing = [n for n, r in receipts.items() if r is None or not (out_dir / n).is_file()
               or (out_dir / n).stat().st_size != r.get("bytes")]
    if missing:
        if require_all:
            raise DftrainError(f"{len(missing)} of {len(names)} shards are not generalized yet "
                               f"(first: {missing[:3]}); run the missing ranks first")
        return False
    settings = [r["settings"] for r in receipts.values()]
    if any(s != settings[0] for s in settings):
        raise DftrainError(f"the shards in {out_dir} were generalized with different settings")
    totals: dict[str, Counter] = {"steps": Counter(), "skipped": Counter(), "fallback_reasons": Counter()}
    for r in receipts.values():
        for key, counter in totals.items():
            counter.update(r.get(key) or {})
    weighted = [(r.get("generality_before_mean"), r.get("generality_after_mean"), r["input"]["samples_read"])
                for r in receipts.values()]

    def wmean(index):
        pairs = [(w[index], w[2]) for w in weighted if w[index] is not None and w[2]]
        total = sum(n for _, n in pairs)
        return round(sum(v * n for v, n in pairs) / total, 4) if total else None

    manifest = Manifest(
        kind=MANIFEST_KIND,
        shards=[ShardInfo(r["name"], r["samples"], r["sha256"], r["bytes"]) for r in receipts.values()],
        command=command,
        extra={"source": str(in_dir), "settings": settings[0] if settings else None,
               "steps": dict(totals["steps"]), "skipped": dict(totals["skipped"]),
               "fallback_reasons": dict(totals["fallback_reasons"]),
               "unique_captions": sum(r.get("unique_captions", 0) for r in receipts.values()),
               "generality_before_mean": wmean(0), "generality_after_mean": wmean(1)},
    )
    manifest.save(out_dir)
    return True
