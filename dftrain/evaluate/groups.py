"""Duplicate groups of a training set: which training images are copies of each other.

A sample's group is its json `group` where the data carries one (dftrain.synthetic writes it),
else the sha256 of its image bytes (exact copies share it). Used for the duplicate-aware
own-caption match and the split of the replication figures by duplicated vs unique images.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

from dftrain.evaluate.cache import image_digest
from dftrain.evaluate.inputs import iter_train_samples


def train_groups(train_dir: str | Path, stats=None) -> dict[str, Hashable]:
    """Training key -> duplicate group ({} when the folder has no manifest)."""
    if not (Path(train_dir) / "manifest.json").is_file():
        return {}
    groups: dict[str, Hashable] = {}
    for sample in iter_train_samples(train_dir, stats=stats):
        meta = sample.get("json") if isinstance(sample.get("json"), dict) else {}
        group = meta.get("group")
        groups[sample["__key__"]] = f"sha256:{image_digest(sample['jpg'])}" if group is None else group
    return groups
