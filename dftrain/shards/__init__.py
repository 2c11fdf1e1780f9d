"""Webdataset shards: the manifest, an atomic writer, and the one reader every stage uses.

    from dftrain.shards import Manifest, ShardWriter, write_shard, iter_samples, ShardDataset

See docs/INTERFACES.md ("Shards") for the sample format and the API contract.
ShardDataset (which imports torch) is loaded on first use, so the CLI stays fast.
"""

from dftrain.shards.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    ShardError,
    ShardInfo,
    sha256_file,
)
from dftrain.shards.reader import SkipStats, iter_samples, resolve_shards, select_shards
from dftrain.shards.writer import ShardWriter, write_shard

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Manifest",
    "ShardDataset",
    "ShardError",
    "ShardInfo",
    "ShardWriter",
    "SkipStats",
    "iter_samples",
    "resolve_shards",
    "select_shards",
    "sha256_file",
    "write_shard",
]


def __getattr__(name: str):
    if name == "ShardDataset":
        from dftrain.shards.dataset import ShardDataset

        return ShardDataset
    raise AttributeError(f"module 'dftrain.shards' has no attribute {name!r}")
