"""Size-weighted Ward merging (transforms/core/hierarchy.py), with SciPy and scikit-learn
as oracles."""

import numpy as np
import pytest
from scipy.cluster.hierarchy import is_monotonic, is_valid_linkage, linkage
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from transforms.core.hierarchy import merge_map, ward_linkage, ward_merge


def _brute_force_ward(c: np.ndarray, w: np.ndarray) -> list:
    """The textbook O(K^3) greedy: merge the cheapest pair, recompute; [(distance, leaf set)]."""
    clusters = [({i}, c[i].astype(float), float(w[i])) for i in range(len(c))]
    out = []
    while len(clusters) > 1:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                (_, ca, wa), (_, cb, wb) = clusters[a], clusters[b]
                cost = wa * wb / (wa + wb) * np.sum((ca - cb) ** 2)
                if best is None or cost < best[0]:
                    best = (cost, a, b)
        cost, a, b = best
        (la, ca, wa), (lb, cb, wb) = clusters[a], clusters[b]
        merged = (la | lb, (wa * ca + wb * cb) / (wa + wb), wa + wb)
        clusters = [cl for i, cl in enumerate(clusters) if i not in (a, b)] + [merged]
        out.append((np.sqrt(2 * cost), frozenset(merged[0])))
    return out


def _leaf_sets(z: np.ndarray) -> list:
    """[(distance, leaf set)] of each row of a linkage."""
    n = len(z) + 1
    members = {i: {i} for i in range(n)}
    out = []
    for i, (a, b, d, count) in enumerate(z):
        members[n + i] = members.pop(int(a)) | members.pop(int(b))
        assert count == len(members[n + i])
        out.append((d, frozenset(members[n + i])))
    return out


@pytest.mark.parametrize("k,d,seed", [(2, 3, 0), (7, 2, 1), (60, 4, 2), (250, 6, 3)])
def test_unit_sizes_equal_scipy_ward(k, d, seed):
    x = np.random.default_rng(seed).normal(size=(k, d))
    z = ward_linkage(x, np.ones(k, np.int64))
    expected = linkage(x, method="ward")
    assert z.dtype == np.float64 and z.shape == (k - 1, 4)
    np.testing.assert_array_equal(z[:, [0, 1, 3]], expected[:, [0, 1, 3]])
    np.testing.assert_allclose(z[:, 2], expected[:, 2], rtol=1e-12, atol=1e-12)


def test_sizes_change_which_pair_merges_first():
    # On a line: A=0, B=1, C=2.2. As points, A-B is the closest pair; but when A and
    # B hold 100 rows each and C one row, moving C's single row to B is cheaper.
    x = np.array([[0.0], [1.0], [2.2]])
    z_unit = ward_linkage(x, np.array([1, 1, 1]))
    assert z_unit[0, :2].tolist() == [0, 1]

    z = ward_linkage(x, np.array([100, 100, 1]))
    assert z[0, :2].tolist() == [1, 2]
    np.testing.assert_allclose(z[0, 2], np.sqrt(2 * 100 * 1 / 101 * 1.2**2))
    bc = (100 * 1.0 + 1 * 2.2) / 101  # the merged centroid is the size-weighted mean
    assert z[1, :2].tolist() == [0, 3] and z[1, 3] == 3
    np.testing.assert_allclose(z[1, 2], np.sqrt(2 * 100 * 101 / 201 * bc**2))


def test_weighted_equals_brute_force_and_increases_sum_to_total_ss():
    rng = np.random.default_rng(7)
    c = rng.normal(size=(25, 3))
    w = rng.integers(1, 500, size=25)
    z = ward_linkage(c, w)
    assert is_valid_linkage(z) and is_monotonic(z)
    got, want = _leaf_sets(z), _brute_force_ward(c, w)
    assert [s for _, s in got] == [s for _, s in want]
    np.testing.assert_allclose([d for d, _ in got], [d for d, _ in want], rtol=1e-10)
    # The Ward increases add up to the weighted sum of squares about the weighted mean.
    mean = np.average(c, axis=0, weights=w)
    np.testing.assert_allclose(np.sum(z[:, 2] ** 2) / 2, np.sum(w * np.sum((c - mean) ** 2, 1)))


def test_weighting_a_centroid_by_n_equals_n_duplicate_points():
    # Merging cost-wise, a cluster of n rows at c is n points at c: compare the top
    # merges against scipy's ward on the duplicated points (the duplicates merge at 0).
    rng = np.random.default_rng(3)
    c = rng.normal(size=(6, 2)) * 5
    w = np.array([3, 1, 4, 1, 5, 2])
    z = ward_linkage(c, w)
    expanded = linkage(np.repeat(c, w, axis=0), method="ward")
    np.testing.assert_allclose(z[:, 2], expanded[-5:, 2], rtol=1e-10)


def test_forty_fine_clusters_merge_back_into_four_blobs():
    x, truth = make_blobs(
        n_samples=4000,
        n_features=3,
        centers=4,
        cluster_std=1.0,
        center_box=(-40, 40),
        random_state=0,
    )
    fine = KMeans(40, n_init=1, random_state=0).fit(x)
    sizes = np.bincount(fine.labels_, minlength=40).astype(np.int64)
    z, mapping = ward_merge(fine.cluster_centers_, sizes, 4)
    assert mapping.dtype == np.int64 and mapping.shape == (40,)
    assert sorted(set(mapping.tolist())) == [0, 1, 2, 3]
    assert adjusted_rand_score(truth, mapping[fine.labels_]) >= 0.99


def test_mapping_is_deterministic_and_numbered_by_smallest_fine_cluster():
    rng = np.random.default_rng(11)
    c = np.vstack([rng.normal(loc, 0.1, size=(5, 2)) for loc in (10.0, -10.0, 0.0)])
    c = c[rng.permutation(len(c))]
    w = rng.integers(1, 50, size=len(c))
    z, mapping = ward_merge(c, w, 3)
    for _ in range(3):
        z2, again = ward_merge(c.copy(), w.copy(), 3)
        np.testing.assert_array_equal(z2, z)
        np.testing.assert_array_equal(again, mapping)
    firsts = [int(np.flatnonzero(mapping == g)[0]) for g in range(3)]
    assert firsts == sorted(firsts) and firsts[0] == 0
    np.testing.assert_array_equal(merge_map(z, 1), np.zeros(len(c), np.int64))
    np.testing.assert_array_equal(merge_map(z, len(c)), np.arange(len(c)))


def test_empty_clusters_merge_at_zero_into_their_nearest_cluster():
    c = np.array([[0.0, 0.0], [10.0, 0.0], [9.0, 0.5], [0.2, 0.1], [20.0, 20.0]])
    w = np.array([5, 7, 0, 0, 3])
    z, mapping = ward_merge(c, w, 3)
    assert is_valid_linkage(z) and is_monotonic(z)
    np.testing.assert_array_equal(z[:2, 2], [0.0, 0.0])
    assert z[2:, 2].min() > 0
    np.testing.assert_array_equal(mapping, [0, 1, 1, 0, 2])
    # The non-empty clusters merge exactly as they would without the empty ones.
    full = ward_linkage(c[[0, 1, 4]], w[[0, 1, 4]])
    np.testing.assert_allclose(z[2:, 2], full[:, 2])


def test_one_cluster():
    z, mapping = ward_merge(np.array([[1.0, 2.0]]), np.array([4]), 1)
    assert z.shape == (0, 4)
    np.testing.assert_array_equal(mapping, [0])


@pytest.mark.parametrize("bad", [0, 6, -1, 2.5, "3", None])
def test_bad_n_groups_raises_naming_the_value(bad):
    c = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(ValueError, match=r"n_groups must be an integer in 1\.\.5.*" + repr(bad)):
        ward_merge(c, np.ones(5, np.int64), bad)
    z = ward_linkage(c, np.ones(5, np.int64))
    with pytest.raises(ValueError, match=r"1\.\.5"):
        merge_map(z, bad)


def test_bad_inputs_raise():
    c = np.zeros((3, 2))
    with pytest.raises(ValueError, match="sizes must have shape"):
        ward_linkage(c, np.ones(4))
    with pytest.raises(ValueError, match=">= 0"):
        ward_linkage(c, np.array([1, -1, 1]))
    with pytest.raises(ValueError, match="all 0"):
        ward_linkage(c, np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        ward_linkage(np.array([[0.0], [np.nan]]), np.ones(2))
