"""Weighted K-Means' core, NumPy only: the weighted Lloyd update and re-seeding, priority
sampling, weighted seeding, selection and the Ward merge (against NumPy and scikit-learn).
The step and the op with weights are in tests/unit/test_weighted_step.py, whole fits in
tests/integration/test_weights.py."""

import numpy as np
import pytest

from transforms.core.hierarchy import merge_clusters, ward_merge
from transforms.core.lloyd import Candidates, RoundState, lloyd_update
from transforms.core.partials import Partials, merge
from transforms.core.sampling import Sample, _bottom, priority_keys, priority_weights, row_hashes
from transforms.core.seeding import _initial_state, initial_centroids, sample_inertia
from transforms.core.selection import select


def _partials(x, w, labels, k, far=()):
    """Weighted Partials of rows `x` [n, D] with weights `w` [n] and `labels` [n]; `far`:
    indices of the far rows, farthest first."""
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x * w[:, None])
    far = np.asarray(far, np.int64)
    return Partials(
        sums=sums,
        counts=np.bincount(labels, minlength=k),
        inertia=0.0,
        far_dist=np.arange(len(far), 0, -1, dtype=np.float64),
        far_rows=x[far].astype(np.float32),
        far_labels=labels[far],
        weights=np.bincount(labels, w, minlength=k),
        far_weights=w[far],
    )


def test_weighted_update_is_the_weighted_mean():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(50, 3)), rng.uniform(0, 3, 50)
    labels = np.arange(50) % 2
    state = lloyd_update(RoundState(np.zeros((2, 3))), _partials(x, w, labels, 2), tol=0)
    for j in range(2):
        expected = np.average(x[labels == j], axis=0, weights=w[labels == j])
        np.testing.assert_allclose(state.centroids[j], expected, rtol=1e-12)
    np.testing.assert_allclose(state.weights, [w[labels == j].sum() for j in range(2)])
    np.testing.assert_array_equal(state.counts, [25, 25])


def test_spherical_weighted_update_is_the_normalized_weighted_sum():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w, labels = rng.uniform(0, 2, 40), np.arange(40) % 2
    state = lloyd_update(RoundState(np.eye(2, 3)), _partials(x, w, labels, 2), 0, spherical=True)
    for j in range(2):
        s = (x[labels == j] * w[labels == j, None]).sum(0)
        np.testing.assert_allclose(state.centroids[j], s / np.linalg.norm(s), rtol=1e-12)


def test_a_cluster_of_weight_zero_is_empty_and_takes_a_far_row_with_its_weight():
    """Cluster 2 has rows, all of weight 0: it is re-seeded by the farthest row, which
    leaves cluster 0 with its weighted sum and weight (scikit-learn's rule)."""
    x = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [5.0, 5.0], [6.0, 5.0], [3.0, 3.0]])
    w = np.array([1.0, 2.0, 4.0, 1.0, 1.0, 0.0])
    labels = np.array([0, 0, 0, 1, 1, 2])
    state = lloyd_update(RoundState(np.zeros((3, 2))), _partials(x, w, labels, 3, far=[2]), 0)
    np.testing.assert_allclose(state.centroids[2], x[2])
    np.testing.assert_allclose(state.centroids[0], (x[0] * 1 + x[1] * 2) / 3)
    np.testing.assert_allclose(state.weights, [3.0, 2.0, 4.0])
    np.testing.assert_array_equal(state.counts, [2, 2, 2])  # its row of weight 0 stays
    assert state.reseeded == 1


def test_unweighted_partials_update_as_before():
    """Weights of 1 give the unweighted update, bit for bit."""
    rng = np.random.default_rng(2)
    x, labels = rng.normal(size=(30, 2)), np.arange(30) % 3
    weighted = _partials(x, np.ones(30), labels, 3, far=[0, 1])
    plain = weighted._replace(weights=None, far_weights=None)
    a = lloyd_update(RoundState(np.zeros((3, 2))), weighted, 0)
    b = lloyd_update(RoundState(np.zeros((3, 2))), plain, 0)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert b.weights is None


def test_merge_sums_the_weights_and_keeps_the_far_rows_weights():
    rng = np.random.default_rng(3)
    x, w, labels = rng.normal(size=(20, 2)), rng.uniform(1, 2, 20), np.arange(20) % 2
    a = _partials(x[:10], w[:10], labels[:10], 2, far=[3, 4])
    b = _partials(x[10:], w[10:], labels[10:], 2, far=[5])
    merged = merge([a, b], n_far=2)
    np.testing.assert_allclose(merged.weights, np.bincount(labels, w))
    assert len(merged.far_weights) == 2
    for row, weight in zip(merged.far_rows, merged.far_weights):
        i = int(np.flatnonzero((x.astype(np.float32) == row).all(1))[0])
        assert weight == w[i]


def _weighted_sample(x, w, m, seed=0):
    """The weighted bottom-m sample of rows `x` with weights `w` (m + 1 kept, as
    BottomSampleFn keeps them)."""
    return _bottom(priority_keys(row_hashes(x, seed), w), x, m + 1, w)


def test_a_priority_sample_of_all_rows_keeps_their_own_weights():
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=(100, 2)), rng.uniform(0, 5, 100)
    w[:10] = 0
    sample = _weighted_sample(x, w, 500)
    assert len(sample.rows) == 100
    np.testing.assert_array_equal(priority_weights(sample, 100), sample.weights)
    # rows of weight 0 come last (key +inf)
    assert not sample.weights[-10:].any() and sample.weights[:-10].all()


def test_priority_sample_weights_estimate_the_total_weight():
    """Priority sampling's estimate of a sum of weights is unbiased; on 20000 heavy-tailed
    weights a 2000-row sample estimates the total and a half's sum within a few percent,
    and holds the heaviest rows (whose estimate is their own weight)."""
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=(20000, 2)), rng.pareto(1.5, 20000) + 0.01
    sample = _weighted_sample(x, w, 2000)
    est = priority_weights(sample, 2000)
    assert est.sum() == pytest.approx(w.sum(), rel=0.05)
    half = sample.rows[:2000, 0] > 0
    assert est[half].sum() == pytest.approx(w[x[:, 0] > 0].sum(), rel=0.08)
    heaviest = np.argsort(w)[-20:]
    assert set(map(tuple, x[heaviest])) <= set(map(tuple, sample.rows[:2000]))


def test_priority_sample_does_not_depend_on_the_order_of_the_rows():
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=(3000, 2)), rng.uniform(0, 1, 3000)
    a = _weighted_sample(x, w, 200)
    order = rng.permutation(3000)
    b = _weighted_sample(x[order], w[order], 200)
    for field in ("hashes", "rows", "weights"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_weighted_kmeans_plus_plus_is_sklearns_with_sample_weight():
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(7)
    x, w = rng.normal(size=(400, 3)), rng.uniform(0, 4, 400)
    sample = _weighted_sample(x, w, 1000)  # every row: the weights are their own
    got = initial_centroids(sample, 5, "k-means++", seed=3)
    expected, _ = kmeans_plusplus(sample.rows, 5, sample_weight=sample.weights, random_state=3)
    np.testing.assert_array_equal(got, expected)


def test_weighted_refinement_is_sklearns_weighted_lloyd():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(8)
    x, w = rng.normal(size=(300, 2)), rng.integers(0, 4, 300).astype(float)
    sample = _weighted_sample(x, w, 1000)
    start = initial_centroids(sample, 3, "random", seed=1)
    got = initial_centroids(sample, 3, "random", seed=1, refine_rounds=20)
    km = KMeans(3, init=start, n_init=1, max_iter=20, tol=0.0, algorithm="lloyd")
    km.fit(sample.rows, sample_weight=sample.weights)
    np.testing.assert_allclose(got, km.cluster_centers_, rtol=1e-10)
    # random starts draw rows of positive weight only
    for seed in range(10):
        drawn = initial_centroids(sample, 3, "random", seed=seed)
        rows = [np.flatnonzero((sample.rows == c).all(1))[0] for c in drawn]
        assert sample.weights[rows].all()


def test_weighted_sample_inertia_and_initial_state():
    rng = np.random.default_rng(9)
    x, w = rng.normal(size=(200, 2)), rng.uniform(0, 2, 200)
    sample = _weighted_sample(x, w, 1000)
    c = x[:3]
    d = ((sample.rows[:, None] - c[None]) ** 2).sum(-1).min(1)
    assert sample_inertia(sample, c) == pytest.approx(float((d * sample.weights).sum()))
    _, state, inertia = _initial_state((0, (3, None)), sample, "given", c, 0, 0.0)
    assert inertia == pytest.approx(float((d * sample.weights).sum()))
    zero = Sample(sample.hashes, sample.rows, np.zeros_like(sample.weights))
    with pytest.raises(Exception, match="positive weight"):
        _initial_state((0, (3, 0)), zero, "k-means++", None, 0, 0.0)


def test_select_scores_a_weighted_sample():
    """A sweep on a weighted sample: the weights decide which K scores best. Two
    groups of heavy rows, and a third group of rows of weight 0: K=2 wins."""
    rng = np.random.default_rng(10)
    x = np.concatenate([rng.normal(c, 0.1, (100, 2)) for c in ([0, 0], [5, 5], [0, 5])])
    w = np.concatenate([np.ones(200), np.zeros(100)])
    sample = _weighted_sample(x, w, 1000)
    c2, c3 = np.array([[0, 0], [5, 5.0]]), np.array([[0, 0], [5, 5.0], [0, 5.0]])
    states = (RoundState(c2), RoundState(c3))
    final = (Partials.zeros(2, 2), Partials.zeros(3, 2))
    chosen = select(Candidates(states, (0, 0)), final, sample)
    assert len(chosen.state.centroids) == 2
    # unweighted, the third group is a cluster of its own: K=3 wins
    assert len(select(Candidates(states, (0, 0)), final, sample.rows).state.centroids) == 3


def test_ward_merge_of_a_weighted_fit_weighs_clusters_by_their_weight_sums():
    c = np.array([[0.0], [1.0], [10.0], [11.0]])
    state = RoundState(c, counts=np.array([1, 1, 1, 1]), weights=np.array([5.0, 1.0, 1.0, 3.0]))
    merged = merge_clusters(state, 2)
    linkage, mapping = ward_merge(c, state.weights, 2)
    np.testing.assert_array_equal(merged.linkage, linkage)
    np.testing.assert_array_equal(merged.merge_map, mapping)
    unweighted, _ = ward_merge(c, np.ones(4), 2)
    assert not np.array_equal(linkage, unweighted)
