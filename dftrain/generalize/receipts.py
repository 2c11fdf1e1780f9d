"""Per-shard receipts and the manifest of a generalized shard folder.

A receipt `OUT/.generalize/<shard>.json` is written (atomically) after its output shard
has been renamed into place: it holds the shard's sha256, size and sample count, its
statistics and the work key it was made under. A shard is reused only when its receipt
matches the tar on disk and its work key equals the current one:

    work_key(input_sha256=..., model=model_identity(...), settings={...})

- input_sha256: the input shard's checksum from the input manifest, so rebuilding the
  input with other content redoes exactly the shards whose content changed;
- model: the model's identity, the sha256 of its weight files (dftrain.fingerprint), or
  "<backend>:<name>" for a stand-in given as an object;
- settings: every option that changes the output (prompt, fallback chain, limits, ...).

Any change redoes the shard (the log says which part changed). The manifest is assembled
from the receipts once every input shard has one, by whichever rank finds that first, or
by `--finalize`; it refuses receipts made under different settings or models.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from dftrain.errors import DftrainError

log = logging.getLogger("dftrain.generalize")

RECEIPT_DIR = ".generalize"
MANIFEST_KIND = "generalized"


def receipt_path(out_dir: Path, shard_name: str) -> Path:
    return out_dir / RECEIPT_DIR / f"{shard_name}.json"


def read_json_receipt(path: Path) -> dict | None:
    """A receipt file's content, or None when it is missing or unreadable (the work is then redone)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        log.warning("ignoring unreadable receipt %s (its work will be redone)", path)
        return None
    return data if isinstance(data, dict) else None


def write_json_receipt(path: Path, data: dict) -> None:
    from dftrain.files import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def read_receipt(out_dir: Path, shard_name: str) -> dict | None:
    return read_json_receipt(receipt_path(out_dir, shard_name))


def write_receipt(out_dir: Path, shard_name: str, data: dict) -> None:
    write_json_receipt(receipt_path(out_dir, shard_name), data)


def model_identity(path: str | Path | None = None, *, stand_in: str | None = None) -> str:
    """What identifies a model for reuse: "sha256:<digest of its weight files>" for a model file or
    folder, or "stand-in:<name>" for a backend given as an object (tests, embedding code)."""
    from dftrain.errors import MissingDependencyError
    from dftrain.fingerprint import tree_sha256

    if path is None:
        if stand_in is None:
            raise ValueError("model_identity needs a path or a stand-in name")
        return f"stand-in:{stand_in}"
    if not Path(path).exists():
        raise MissingDependencyError(f"model {path} not found (pass a local model folder or file with --model)")
    return f"sha256:{tree_sha256(path)}"


def work_key(*, input_sha256: str, model: str, settings: dict) -> dict:
    """Everything a generalized shard depends on (see the module docstring)."""
    return {"input_sha256": input_sha256, "model": model, "settings": settings}


def stale_parts(receipt: dict, key: dict) -> list[str]:
    """The parts of `key` that differ from the receipt's (empty: the work can be reused)."""
    made = receipt.get("key") or {}
    changed = [part for part in ("input_sha256", "model") if made.get(part) != key[part]]
    old, new = made.get("settings") or {}, key["settings"]
    changed += [f"settings.{name}" for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
    return changed


def shard_is_done(out_dir: Path, shard_name: str, key: dict, *, verify_sha: bool = True) -> bool:
    """True when the output shard exists, matches its receipt, and was made under `key` (work_key)."""
    from dftrain.shards import sha256_file

    receipt = read_receipt(out_dir, shard_name)
    tar = out_dir / shard_name
    if receipt is None or not tar.is_file():
        return False
    changed = stale_parts(receipt, key)
    if changed:
        log.info("%s: redoing it, changed since it was made: %s", tar, ", ".join(changed))
        return False
    if tar.stat().st_size != receipt.get("bytes"):
        log.warning("%s does not match its receipt (size); redoing it", tar)
        return False
    if verify_sha and sha256_file(tar) != receipt.get("sha256"):
        log.warning("%s does not match its receipt (sha256); redoing it", tar)
        return False
    return True


def input_shards(in_dir) -> list:
    """The input shards (ShardInfo, under their names unique in the set: dftrain.shards.inputs) in order."""
    from dftrain.shards.inputs import shard_set

    return shard_set(in_dir).shards


def input_tar(in_dir, name: str) -> Path:
    """The input tar of the shard `input_shards` calls `name`."""
    from dftrain.shards.inputs import shard_set

    return shard_set(in_dir).tar_of(name)


def _source_folders(in_dir) -> str | list[str]:
    """The manifest's `source`: the input folder, or the list of them."""
    from dftrain.shards.inputs import shard_set

    folders = [str(f) for f in shard_set(in_dir).folders]
    return folders[0] if len(folders) == 1 else folders


def finalize(in_dir, out_dir: Path, *, command: str = "", require_all: bool = True, write: bool = True,
             dedup: dict | None = None) -> bool:
    """Write OUT/manifest.json when every input shard has a finished output shard made from its
    current content.

    Returns False (or raises DftrainError with require_all) when some are missing or stale.
    write=False only checks (True: the manifest would be written). `dedup`: the caption table's summary
    (passes.table_summary) with --dedup global, recorded in the manifest.
    """
    from dftrain.shards import Manifest, ShardInfo

    shards = input_shards(in_dir)
    names = [s.name for s in shards]
    receipts = {name: read_receipt(out_dir, name) for name in names}
    missing = [n for n, r in receipts.items() if r is None or not (out_dir / n).is_file()
               or (out_dir / n).stat().st_size != r.get("bytes")]
    if missing:
        if require_all:
            raise DftrainError(f"{len(missing)} of {len(names)} shards are not generalized yet "
                               f"(first: {missing[:3]}); run the missing ranks first")
        return False
    inputs = {s.name: s.sha256 for s in shards}
    stale = [n for n, r in receipts.items() if (r.get("key") or {}).get("input_sha256") != inputs[n]]
    if stale:
        message = (f"{len(stale)} shard(s) in {out_dir} were generalized from an older version of "
                   f"{_source_folders(in_dir)} "
                   f"(first: {stale[:3]}); run the generalize ranks again")
        if require_all:
            raise DftrainError(message)
        log.info("%s", message)
        return False
    settings = [r["settings"] for r in receipts.values()]
    models = {(r.get("key") or {}).get("model") for r in receipts.values()}
    if any(s != settings[0] for s in settings) or len(models) > 1:
        raise DftrainError(f"the shards in {out_dir} were generalized with different settings or models; "
                           "run every rank with the same options (or --overwrite)")
    if not write:
        return True
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
        extra={"source": _source_folders(in_dir), "settings": settings[0] if settings else None,
               "model": models.pop() if models else None,
               "steps": dict(totals["steps"]), "skipped": dict(totals["skipped"]),
               "fallback_reasons": dict(totals["fallback_reasons"]),
               "unique_captions": sum(r.get("unique_captions", 0) for r in receipts.values()),
               "generality_before_mean": wmean(0), "generality_after_mean": wmean(1),
               "dedup": dedup},
    )
    manifest.save(out_dir)
    return True
