"""The one start method of dftrain's worker processes (shard build, training-data decoding, score)."""

from __future__ import annotations

import multiprocessing


def worker_context():
    """spawn, everywhere: a forked child copies a parent that may hold threads (torch's intra-op pool,
    generalize's background writer, Ray's), whose locks it can never release; and spawn is the only
    method on macOS and Windows. Workers import what they need in their initializer."""
    return multiprocessing.get_context("spawn")
