"""Where dftrain keeps caches (converted models, WordNet statistics, descriptors) and finds its packaged files."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$DFTRAIN_CACHE, else ~/.cache/dftrain; created on demand."""
    root = Path(os.environ.get("DFTRAIN_CACHE") or Path.home() / ".cache" / "dftrain")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def packaged_ds_config(name: str) -> Path:
    """One of the DeepSpeed configs shipped inside the package (dftrain/ds_configs/NAME.json), so that a
    non-editable install has them too."""
    return Path(__file__).resolve().parent / "ds_configs" / f"{name}.json"
