"""Where dftrain keeps caches (converted models, WordNet statistics, descriptors)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$DFTRAIN_CACHE, else ~/.cache/dftrain; created on demand."""
    root = Path(os.environ.get("DFTRAIN_CACHE") or Path.home() / ".cache" / "dftrain")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
