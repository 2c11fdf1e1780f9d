"""Metrics and retrieval against brute-force numpy on small sets."""

import numpy as np
import pytest

from dftrain.errors import DftrainError
from dftrain.evaluate import metrics
from dftrain.evaluate.retrieval import IVFParams, exact_search, ivf_search, nearest


def unit_rows(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_matches_full_matrix_across_chunks():
    q, t = unit_rows(37, 16, 0), unit_rows(101, 16, 1)
    full = q @ t.T
    res = exact_search(q, t, k=3, query_chunk=5, train_chunk=7)  # many chunks of both
    order = np.argsort(-full, axis=1)[:, :3]
    np.testing.assert_array_equal(res.ids, order)
    np.testing.assert_allclose(res.sims, np.take_along_axis(full, order, axis=1), atol=1e-5)


def test_exact_search_accepts_chunk_iterables():
    q, t = unit_rows(9, 8, 2), unit_rows(50, 8, 3)
    res = exact_search(q, (t[i:i + 11] for i in range(0, 50, 11)), k=1)
    np.testing.assert_array_equal(res.ids[:, 0], (q @ t.T).argmax(axis=1))


def test_background_excludes_only_self_and_keeps_exact_duplicates():
    t = unit_rows(30, 8, 4)
    t[5] = t[6] = t[7] = t[3]  # four identical training images: each one's best other is sim 1
    rows = np.arange(30)
    res = exact_search(t, t, k=1, exclude_ids=rows, train_chunk=4)
    full = t @ t.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_allclose(res.sims[:, 0], full.max(axis=1), atol=1e-5)
    assert set(res.ids[[3, 5, 6, 7], 0]) <= {3, 5, 6, 7}
    assert all(res.ids[i, 0] != i for i in range(30))
    np.testing.assert_allclose(res.sims[[3, 5, 6, 7], 0], 1.0, atol=1e-5)


def test_ivf_recall_on_near_copies():
    t = unit_rows(2000, 16, 5)
    noise = np.random.default_rng(6).normal(scale=0.05, size=(200, 16)).astype(np.float32)
    q = t[:200] + noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact = exact_search(q, t)
    approx = ivf_search(q, t, params=IVFParams(nlist=32, nprobe=4))
    assert metrics.recall_at_1(exact.ids, approx.ids) >= 0.95
    pq = ivf_search(q, t, params=IVFParams(nlist=32, nprobe=4, pq_m=4))
    assert metrics.recall_at_1(exact.ids, pq.ids) >= 0.8


def test_ivf_background_excludes_self():
    t = unit_rows(300, 8, 7)
    rows = np.arange(300)
    res = nearest(t, t, method="ivf", exclude_ids=rows, ivf=IVFParams(nlist=4, nprobe=4))
    assert (res.ids[:, 0] != rows).all()


def test_mismatched_descriptor_sizes_are_a_clear_error():
    with pytest.raises(DftrainError, match="descriptor sizes differ"):
        nearest(unit_rows(3, 8, 0), unit_rows(5, 16, 1))
    with pytest.raises(DftrainError, match="descriptor sizes differ"):
        exact_search(unit_rows(3, 8, 0), [unit_rows(5, 16, 1)])


def test_similarity_summary_matches_numpy():
    sims = np.random.default_rng(1).uniform(-0.2, 1.0, size=57)
    s = metrics.similarity_summary(sims, threshold=0.5)
    assert s["sim_mean"] == pytest.approx(sims.mean())
    assert s["sim_std"] == pytest.approx(sims.std())
    for p in (75, 90, 95):
        ranked = np.sort(sims)
        pos = p / 100 * (len(sims) - 1)  # linear interpolation between order statistics
        lo = int(np.floor(pos))
        expected = ranked[lo] + (pos - lo) * (ranked[min(lo + 1, len(sims) - 1)] - ranked[lo])
        assert s[f"sim_p{p}"] == pytest.approx(expected)
    assert s["sim_frac_above"] == pytest.approx(sum(v > 0.5 for v in sims) / len(sims))


def test_own_match_rate_counts_only_known_keys():
    assert metrics.own_match_rate(["a", "b", "c", "d"], ["a", "x", None, "d"]) == pytest.approx(2 / 3)
    assert metrics.own_match_rate(["a"], [None]) is None


# Training set: image A has 3 copies (a1-a3), B 2 (b1, b2), C and D one each.
GROUPS = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "c": "C", "d": "D"}


def test_own_group_match_compares_duplicate_groups():
    best = ["a3", "b1", "c", "a1", "c"]
    own = ["a1", "b2", "d", None, "zz"]  # a hit by copy, a hit by copy, a miss; unknown keys not counted
    result = metrics.own_group_match(best, own, GROUPS)
    assert result["n"] == 3 and result["rate"] == pytest.approx(2 / 3)
    assert result["chance"] == pytest.approx((3 / 7 + 2 / 7 + 1 / 7) / 3)
    assert metrics.own_group_match(["a1"], [None], GROUPS) == {"rate": None, "chance": None, "n": 0}


def test_duplicate_split_separates_duplicated_from_unique_prompts():
    sims = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.4])
    best = ["a2", "b1", "a1", "d", "a1", "x"]
    own = ["a1", "b2", "c", "d", "c", None]
    split = metrics.duplicate_split(sims, best, own, GROUPS, threshold=0.7)
    dup, uni = split["duplicated"], split["unique"]
    assert dup["n"] == 2 and uni["n"] == 3  # the generation without a key is left out
    assert dup["sim_mean"] == pytest.approx(0.85) and dup["sim_p95"] == pytest.approx(np.percentile([0.9, 0.8], 95))
    assert dup["frac_above_0_5"] == 1.0 and dup["frac_above_threshold"] == 1.0 and dup["own_group_match"] == 1.0
    assert uni["sim_mean"] == pytest.approx(np.mean([0.3, 0.6, 0.2]))
    assert uni["frac_above_0_5"] == pytest.approx(1 / 3) and uni["frac_above_threshold"] == 0.0
    assert uni["own_group_match"] == pytest.approx(1 / 3)  # only d found itself
    empty = metrics.duplicate_split(sims[:1], best[:1], own[:1], GROUPS, 0.7)["unique"]
    assert empty["n"] == 0 and empty["sim_p95"] is None


def test_diversity_matches_pairwise_loop():
    x = unit_rows(9, 6, 8)
    groups = ["p", "p", "p", "q", "q", "r", None, None, "s"]
    value, n = metrics.diversity(x, groups)
    expected = []
    for g in ("p", "q"):  # groups with >= 2 members; r, s and None are left out
        idx = [i for i, h in enumerate(groups) if h == g]
        d = [1 - x[i] @ x[j] for a, i in enumerate(idx) for j in idx[a + 1:]]
        expected.append(np.mean(d))
    assert n == 2
    assert value == pytest.approx(np.mean(expected), abs=1e-6)
    assert metrics.diversity(x[:2], [None, "a"]) == (None, 0)


def test_gaussian_fit_matches_np_cov_in_chunks():
    x = np.random.default_rng(2).normal(size=(40, 5))
    mu, cov = metrics.gaussian_fit([x[:13], x[13:31], x[31:]])
    np.testing.assert_allclose(mu, x.mean(axis=0))
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), atol=1e-10)


def brute_force_frechet(mu1, s1, mu2, s2):
    """tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), via symmetric eigendecompositions only."""
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def test_frechet_distance_matches_brute_force():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(60, 4)), rng.normal(loc=0.5, scale=1.5, size=(70, 4)) @ rng.normal(size=(4, 4))
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(brute_force_frechet(mu1, s1, mu2, s2), rel=1e-6)
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_one_dimension_closed_form():
    # 1-d Gaussians: (m1 - m2)^2 + (sd1 - sd2)^2
    assert metrics.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == \
        pytest.approx(4.0 + 1.0)


def test_recall_at_1():
    assert metrics.recall_at_1(np.array([[1], [2], [3]]), np.array([[1], [0], [3]])) == pytest.approx(2 / 3)


def test_ivf_index_trains_on_buffered_chunks():
    from dftrain.evaluate.retrieval import IVFIndex

    t = unit_rows(1000, 8, 9)
    index = IVFIndex(8, 1000, IVFParams(nlist=8, nprobe=8, train_size=450))
    for start in range(0, 1000, 100):
        index.add(t[start:start + 100])
        assert (index.index is None) == (start + 100 < 450)
    assert index.ntotal == 1000
    res = index.search(t[:50])  # nprobe = nlist: exhaustive, so exact
    np.testing.assert_array_equal(res.ids[:, 0], np.arange(50))
    small = IVFIndex(8, 30, IVFParams(nlist=4, train_size=1000))
    small.add(t[:30])  # fewer rows than train_size: trained on all of them at search time
    assert small.search(t[:3]).ids.shape == (3, 1) and small.ntotal == 30
