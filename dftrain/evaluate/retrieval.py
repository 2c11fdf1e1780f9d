"""Nearest training image for each query descriptor, in bounded memory (FAISS).

Exact search streams the training descriptors in chunks (each chunk in its own
IndexFlatIP) and the queries in chunks, keeping only the running top-k per query:
working memory is one training chunk + one query chunk's results, whatever the
training-set size, and the full similarity matrix never exists. The IVF option
(IndexIVFFlat, or IndexIVFPQ to compress the vectors) trades exactness for speed
on very large training sets; measure its recall with metrics.recall_at_1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from dftrain.errors import ConfigError, DftrainError

DEFAULT_QUERY_CHUNK = 4096
DEFAULT_TRAIN_CHUNK = 65536


def _faiss():
    import faiss

    return faiss


def gpu_available() -> bool:
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _maybe_gpu(index, use_gpu: bool | None):
    faiss = _faiss()
    if use_gpu is None:
        use_gpu = gpu_available()
    if use_gpu:
        if not gpu_available():
            raise ConfigError("GPU search requested but this faiss build has no GPU (install faiss-gpu)")
        index = faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    return index


_GPU_RESOURCES = []


def _gpu_resources():
    """One StandardGpuResources (scratch memory, streams) for the process, made on first use."""
    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(_faiss().StandardGpuResources())
    return _GPU_RESOURCES[0]


def _as_queries(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise DftrainError(f"descriptors must be a 2-d array, got shape {x.shape}")
    return x


def _check_dim(queries: np.ndarray, chunk: np.ndarray) -> None:
    if chunk.ndim != 2 or chunk.shape[1] != queries.shape[1]:
        raise DftrainError(
            f"descriptor sizes differ: queries have dim {queries.shape[1]}, training descriptors "
            f"have shape {chunk.shape} (were both sets embedded with the same descriptor?)")


def iter_chunks(x: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(x), size):
        yield x[start:start + size]


def merge_topk(sims_a: np.ndarray, ids_a: np.ndarray, sims_b: np.ndarray, ids_b: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of two candidate lists; on ties the earlier list (lower ids) wins."""
    sims = np.concatenate([sims_a, sims_b], axis=1)
    ids = np.concatenate([ids_a, ids_b], axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(ids, order, axis=1)


@dataclass
class SearchResult:
    sims: np.ndarray  # (n_queries, k) float32, best first
    ids: np.ndarray  # (n_queries, k) int64 training row numbers; -1 where fewer than k candidates


def exact_search(queries: np.ndarray, train_chunks: Iterable[np.ndarray] | np.ndarray, *, k: int = 1,
                 exclude_ids: np.ndarray | None = None, query_chunk: int = DEFAULT_QUERY_CHUNK,
                 train_chunk: int = DEFAULT_TRAIN_CHUNK, use_gpu: bool | None = None) -> SearchResult:
    """Exact maximum inner product search: the top-k training rows for every query.

    `train_chunks` is an array (split into `train_chunk` rows) or an iterable of arrays (e.g. read
    from disk chunk by chunk); row numbers count across chunks. `exclude_ids[i]` (optional) is a
    training row query i must not match: itself, for training-vs-training background. Only that
    row is excluded: exact duplicates of a query elsewhere in the training set are other images.
    """
    faiss = _faiss()
    # faiss computes inner products in BLAS blocks of query_bs x database_bs; its default database
    # block (1,024 rows) is slow for large sets. 1,024 x 16,384 floats = 64 MiB, fixed.
    faiss.cvar.distance_compute_blas_query_bs = 1024
    faiss.cvar.distance_compute_blas_database_bs = 16384
    queries = _as_queries(queries)
    if isinstance(train_chunks, np.ndarray):
        train_chunks = iter_chunks(train_chunks, train_chunk)
    nq = len(queries)
    best_sims = np.full((nq, k), -np.inf, dtype=np.float32)
    best_ids = np.full((nq, k), -1, dtype=np.int64)
    extra = 0 if exclude_ids is None else 1  # one more candidate, in case it is the excluded row
    offset = 0
    for chunk in train_chunks:
        chunk = _as_queries(chunk)
        _check_dim(queries, chunk)
        if len(chunk) == 0:
            continue
        rows = len(chunk)
        index = faiss.IndexFlatIP(chunk.shape[1])
        index.add(chunk)
        del chunk  # the index holds a copy: let the next chunk take this one's memory, not add to it
        index = _maybe_gpu(index, use_gpu)
        kk = min(k + extra, rows)
        for start in range(0, nq, query_chunk):
            stop = min(start + query_chunk, nq)
            sims, ids = index.search(queries[start:stop], kk)
            ids = np.where(ids >= 0, ids + offset, -1)
            sims = np.where(ids >= 0, sims, -np.inf).astype(np.float32)
            if exclude_ids is not None:
                sims = np.where(ids == exclude_ids[start:stop, None], -np.inf, sims).astype(np.float32)
            best_sims[start:stop], best_ids[start:stop] = merge_topk(
                best_sims[start:stop], best_ids[start:stop], sims, ids, k)
        offset += rows
        del index
    if offset == 0:
        raise DftrainError("the training descriptor set is empty")
    best_ids = np.where(np.isfinite(best_sims), best_ids, -1)
    return SearchResult(best_sims, best_ids)


@dataclass
class IVFParams:
    nlist: int | None = None  # number of coarse cells; default ~4 sqrt(n)
    nprobe: int = 16  # cells visited per query
    pq_m: int | None = None  # product-quantiser sub-vectors (IndexIVFPQ); None = IndexIVFFlat
    train_size: int | None = None  # vectors used to train the coarse quantiser; default 64 * nlist

    def resolve_nlist(self, n: int) -> int:
        nlist = self.nlist or max(1, int(4 * np.sqrt(n)))
        return min(nlist, n)


class IVFIndex:
    """Approximate inner-product index (IVF-Flat or IVF-PQ), filled chunk by chunk."""

    def __init__(self, dim: int, n_expected: int, params: IVFParams | None = None,
                 use_gpu: bool | None = None) -> None:
        self.params = params or IVFParams()
        self.dim = dim
        self.nlist = self.params.resolve_nlist(n_expected)
        self.use_gpu = use_gpu
        self.index = None
        self.ntotal = 0
        self.train_size = self.params.train_size or 64 * self.nlist
        self._pending: list[np.ndarray] = []

    def train(self, sample: np.ndarray) -> None:
        """Train the coarse quantiser (and PQ codebooks) on `sample`; rows added later are only assigned."""
        faiss = _faiss()
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.params.pq_m:
            if self.dim % self.params.pq_m:
                raise ConfigError(f"pq_m={self.params.pq_m} must divide the descriptor dim {self.dim}")
            index = faiss.IndexIVFPQ(quantizer, self.dim, self.nlist, self.params.pq_m, 8,
                                     faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        index.nprobe = self.params.nprobe
        self._quantizer = quantizer  # keep alive: the IVF index does not own it
        self.index = _maybe_gpu(index, self.use_gpu)

    def add(self, chunk: np.ndarray) -> None:
        """Add training rows; the first `train_size` rows (buffered across chunks) train the index.

        Callers pass chunks of a shuffled or unordered set: the first rows must be representative.
        """
        chunk = _as_queries(chunk)
        if chunk.shape[1] != self.dim:
            raise DftrainError(f"descriptor sizes differ: index dim {self.dim}, chunk {chunk.shape}")
        if self.index is not None:
            self.index.add(chunk)
            self.ntotal += len(chunk)
            return
        self._pending.append(chunk)
        if sum(len(c) for c in self._pending) >= self.train_size:
            self._flush()

    def _flush(self) -> None:
        if self.index is None and self._pending:
            rows = np.concatenate(self._pending)
            self.train(rows[: self.train_size])
            self.index.add(rows)
            self.ntotal += len(rows)
        self._pending = []

    def search(self, queries: np.ndarray, *, k: int = 1, exclude_ids: np.ndarray | None = None,
               query_chunk: int = DEFAULT_QUERY_CHUNK) -> SearchResult:
        self._flush()  # fewer rows than train_size: train on all of them
        if self.index is None:
            raise DftrainError("the training descriptor set is empty")
        queries = _as_queries(queries)
        if queries.shape[1] != self.dim:
            raise DftrainError(f"descriptor sizes differ: queries dim {queries.shape[1]}, index dim {self.dim}")
        extra = 0 if exclude_ids is None else 1
        sims_out, ids_out = [], []
        for start in range(0, len(queries), query_chunk):
            stop = min(start + query_chunk, len(queries))
            sims, ids = self.index.search(queries[start:stop], k + extra)
            sims = np.where(ids >= 0, sims, -np.inf).astype(np.float32)
            if exclude_ids is not None:
                sims = np.where(ids == exclude_ids[start:stop, None], -np.inf, sims).astype(np.float32)
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            sims = np.take_along_axis(sims, order, axis=1)
            ids = np.where(np.isfinite(sims), np.take_along_axis(ids, order, axis=1), -1)
            sims_out.append(sims)
            ids_out.append(ids)
        return SearchResult(np.concatenate(sims_out), np.concatenate(ids_out).astype(np.int64))


def ivf_search(queries: np.ndarray, train: np.ndarray, *, k: int = 1, exclude_ids: np.ndarray | None = None,
               params: IVFParams | None = None, train_chunk: int = DEFAULT_TRAIN_CHUNK,
               use_gpu: bool | None = None, seed: int = 0) -> SearchResult:
    """Build an IVF index over `train` (added in chunks, trained on a random sample) and search."""
    return ivf_search_streamed(queries, lambda: iter_chunks(train, train_chunk), len(train),
                               lambda size: train[random_rows(len(train), size, seed)], k=k,
                               exclude_ids=exclude_ids, params=params, use_gpu=use_gpu)


def random_rows(n: int, size: int, seed: int) -> np.ndarray:
    """A seeded, sorted sample of min(size, n) row numbers out of n."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))


def ivf_search_streamed(queries: np.ndarray, chunks: Callable[[], Iterable[np.ndarray]], n: int,
                        sample: Callable[[int], np.ndarray], *, k: int = 1,
                        exclude_ids: np.ndarray | None = None, params: IVFParams | None = None,
                        use_gpu: bool | None = None) -> SearchResult:
    """IVF over a training set read as chunks: trained on `sample(train_size)` rows (a random sample:
    the set may be ordered), then filled chunk by chunk. Memory: the index and one chunk."""
    queries = _as_queries(queries)
    index = IVFIndex(queries.shape[1], n, params, use_gpu)
    index.train(_as_queries(sample(index.train_size)))
    for chunk in chunks():
        index.add(chunk)
    return index.search(queries, k=k, exclude_ids=exclude_ids)


def nearest_streamed(queries: np.ndarray, chunks: Callable[[], Iterable[np.ndarray]], n: int,
                     sample: Callable[[int], np.ndarray], *, method: str = "exact", k: int = 1,
                     exclude_ids: np.ndarray | None = None, ivf: IVFParams | None = None,
                     use_gpu: bool | None = None) -> SearchResult:
    """`nearest` over a training set that is never in memory: `chunks()` yields its rows in order
    (e.g. memory-mapped shards), `sample(size)` returns a random sample of rows for IVF training."""
    if n == 0:
        raise DftrainError("the training descriptor set is empty")
    if method == "exact":
        return exact_search(queries, chunks(), k=k, exclude_ids=exclude_ids, use_gpu=use_gpu)
    if method == "ivf":
        return ivf_search_streamed(queries, chunks, n, sample, k=k, exclude_ids=exclude_ids, params=ivf,
                                   use_gpu=use_gpu)
    raise ConfigError(f"unknown search method {method!r}; choose exact or ivf")


def nearest(queries: np.ndarray, train: np.ndarray, *, method: str = "exact", k: int = 1,
            exclude_ids: np.ndarray | None = None, ivf: IVFParams | None = None,
            use_gpu: bool | None = None) -> SearchResult:
    """Dispatch: method 'exact' or 'ivf'."""
    queries = _as_queries(queries)
    if len(train) == 0:
        raise DftrainError("the training descriptor set is empty")
    _check_dim(queries, np.asarray(train[:1]))
    if method == "exact":
        return exact_search(queries, train, k=k, exclude_ids=exclude_ids, use_gpu=use_gpu)
    if method == "ivf":
        return ivf_search(queries, train, k=k, exclude_ids=exclude_ids, params=ivf, use_gpu=use_gpu)
    raise ConfigError(f"unknown search method {method!r}; choose exact or ivf")
