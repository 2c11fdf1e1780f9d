"""Replication, diversity and fit metrics: pure numpy functions, no I/O.

Similarities are cosines of L2-normalised descriptors (inner products).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
from scipy import linalg

PERCENTILES = (75, 90, 95)


def fraction_above(sims: np.ndarray, threshold: float) -> float:
    """Fraction of similarities strictly above `threshold` (0.0 for an empty array)."""
    sims = np.asarray(sims, dtype=np.float64)
    return float((sims > threshold).mean()) if sims.size else 0.0


def similarity_summary(best_sims: np.ndarray, threshold: float = 0.5, prefix: str = "sim") -> dict[str, float]:
    """Mean, std (population), 75/90/95th percentiles (linear interpolation) and fraction > threshold."""
    sims = np.asarray(best_sims, dtype=np.float64)
    if sims.size == 0:
        raise ValueError("no similarities to summarise")
    out = {f"{prefix}_mean": float(sims.mean()), f"{prefix}_std": float(sims.std())}
    for p in PERCENTILES:
        out[f"{prefix}_p{p}"] = float(np.percentile(sims, p))
    out[f"{prefix}_frac_above"] = float((sims > threshold).mean())
    return out


def own_match_rate(best_keys: Sequence[str | None], own_keys: Sequence[str | None]) -> float | None:
    """Fraction of generations whose nearest training image is the one whose caption prompted them.

    Only generations with a known own key count; None when there are none.
    """
    pairs = [(b, o) for b, o in zip(best_keys, own_keys, strict=True) if o is not None]
    if not pairs:
        return None
    return float(np.mean([b == o for b, o in pairs]))


def mean_pairwise_distance(descriptors: np.ndarray) -> float:
    """Mean cosine distance (1 - cos) over the unordered pairs of L2-normalised rows (n >= 2)."""
    x = np.asarray(descriptors, dtype=np.float64)
    n = len(x)
    if n < 2:
        raise ValueError("need at least two descriptors")
    # sum over i != j of cos = |sum x|^2 - sum |x_i|^2, without the n x n matrix.
    total = x.sum(axis=0)
    off_diagonal = float(total @ total - np.einsum("ij,ij->", x, x))
    return 1.0 - off_diagonal / (n * (n - 1))


def diversity(descriptors: np.ndarray, groups: Sequence[Hashable | None]) -> tuple[float | None, int]:
    """Mean pairwise cosine distance within each group (generations of one prompt), averaged over
    groups with >= 2 members. Returns (value or None, number of groups used). None groups are ignored."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        if g is not None:
            members[g].append(i)
    values = [mean_pairwise_distance(descriptors[idx]) for idx in members.values() if len(idx) >= 2]
    if not values:
        return None, 0
    return float(np.mean(values)), len(values)


def recall_at_1(reference_ids: np.ndarray, approximate_ids: np.ndarray) -> float:
    """Fraction of queries whose approximate nearest neighbour is the exact one."""
    ref = np.asarray(reference_ids).reshape(len(reference_ids), -1)[:, 0]
    approx = np.asarray(approximate_ids).reshape(len(approximate_ids), -1)[:, 0]
    return float((ref == approx).mean())


class GaussianAccumulator:
    """Mean and covariance of feature rows, accumulated chunk by chunk in float64."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.total = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def add(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        self.n += len(rows)
        self.total += rows.sum(axis=0)
        self.outer += rows.T @ rows

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Sample mean and unbiased covariance (ddof=1, as np.cov)."""
        if self.n < 2:
            raise ValueError("need at least two feature rows for a covariance")
        mu = self.total / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def gaussian_fit(chunks: Iterable[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    chunks = [chunks] if isinstance(chunks, np.ndarray) else chunks
    acc = None
    for chunk in chunks:
        chunk = np.asarray(chunk)
        acc = acc or GaussianAccumulator(chunk.shape[1])
        acc.add(chunk)
    if acc is None:
        raise ValueError("no features")
    return acc.mean_cov()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the distance behind FID.

    As in the reference FID code: if the product is near singular, add eps to the diagonals;
    a tiny imaginary part from sqrtm's numerical error is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature sizes differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in the matrix square root")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def group_sizes(group_of: Mapping[str, Hashable]) -> dict[Hashable, int]:
    """Training images per duplicate group (key -> group in, group -> count out)."""
    sizes: dict[Hashable, int] = defaultdict(int)
    for group in group_of.values():
        sizes[group] += 1
    return dict(sizes)


def own_group_match(best_keys: Sequence[str | None], own_keys: Sequence[str | None],
                    group_of: Mapping[str, Hashable], sizes: Mapping[Hashable, int] | None = None,
                    n_train: int | None = None) -> dict:
    """Duplicate-aware own-caption match: the nearest training image of a generation is (a copy of)
    the image whose caption prompted it.

    With duplicated training images the exact-key match is a coin toss among identical copies, so
    keys are compared by duplicate group. `chance` is the rate a random nearest neighbour would get:
    the mean over generations of (copies of the prompt's image) / (training images).
    Returns {"rate", "chance", "n"} (None rates when no generation has a known own key).
    `group_of` may hold only the keys involved when `sizes` (training images per group, for the own
    keys' groups) and `n_train` are given: a training set too large for a full mapping.
    """
    sizes = group_sizes(group_of) if sizes is None else sizes
    n_train = len(group_of) if n_train is None else n_train
    hits, chance, counted = 0, 0.0, 0
    for best, own in zip(best_keys, own_keys, strict=True):
        if own is None or own not in group_of:
            continue
        counted += 1
        hits += int(best in group_of and group_of[best] == group_of[own])
        chance += sizes[group_of[own]] / n_train
    if not counted:
        return {"rate": None, "chance": None, "n": 0}
    return {"rate": hits / counted, "chance": chance / counted, "n": counted}


def duplicate_split(best_sims: np.ndarray, best_keys: Sequence[str | None], own_keys: Sequence[str | None],
                    group_of: Mapping[str, Hashable], threshold: float, sizes: Mapping[Hashable, int] | None = None,
                    n_train: int | None = None) -> dict[str, dict]:
    """The replication figures separately for generations prompted by a duplicated training image
    (its group has more than one copy) and by a unique one, as the prior study plots them.

    Generations whose own key is unknown are left out. Per subset: n, sim_mean, sim_p95,
    frac_above_0_5, frac_above_threshold and the duplicate-aware own match (None figures for an
    empty subset). `sizes` / `n_train`: as for own_group_match.
    """
    sims = np.asarray(best_sims, dtype=np.float64)
    sizes = group_sizes(group_of) if sizes is None else sizes
    out = {}
    for name, wanted in (("duplicated", True), ("unique", False)):
        rows = [i for i, own in enumerate(own_keys)
                if own in group_of and (sizes[group_of[own]] > 1) == wanted]
        subset = sims[rows]
        own = own_group_match([best_keys[i] for i in rows], [own_keys[i] for i in rows], group_of, sizes, n_train)
        out[name] = {
            "n": len(rows),
            "sim_mean": float(subset.mean()) if rows else None,
            "sim_p95": float(np.percentile(subset, 95)) if rows else None,
            "frac_above_0_5": fraction_above(subset, 0.5) if rows else None,
            "frac_above_threshold": fraction_above(subset, threshold) if rows else None,
            "own_group_match": own["rate"],
        }
    return out
