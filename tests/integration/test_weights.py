"""Weighted K-Means (--weight_column) against scikit-learn's sample_weight and NumPy.

The standardization stays unweighted (tf.Transform's z-score, as Spark's StandardScaler
with weightCol): the oracle standardizes with scikit-learn's StandardScaler without
sample_weight. The core functions' weighted unit tests are in tests/unit/test_weights_core.py.
"""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from helpers import (
    assignments,
    centroids,
    features_of,
    fit,
    metrics,
    rejected,
    scaled_blobs,
    write_shards,
)

K, ROUNDS = 4, 30


def _table(rows: int = 3000, seed: int = 3) -> pa.Table:
    """id, f0..f3 (overlapping blobs, scales up to 1e5 apart) and w, integer weights 0..3."""
    table = scaled_blobs(rows, 4, K, seed=seed, cluster_std=2.5)
    w = np.random.default_rng(seed).integers(0, 4, rows).astype(np.float64)
    return table.append_column("w", pa.array(w))


def _fit(out, pattern, init_path, *extra) -> dict:
    args = ["--input", pattern, "--k", K, "--id_column", "id", "--tol", 0]
    args += ["--max_rounds", ROUNDS, "--init", init_path, *extra]
    assert fit(out, *args) == 0
    return metrics(out)


@pytest.fixture(scope="module")
def weighted(tmp_path_factory):
    """One weighted fit from given centroids (z-scored) and scikit-learn's on the same rows."""
    base = tmp_path_factory.mktemp("weighted")
    table = _table()
    pattern = write_shards(table, base / "in", "parquet", shards=3)
    z = StandardScaler().fit_transform(features_of(table))
    init = z[np.random.default_rng(7).choice(len(z), K, replace=False)].astype(np.float32)
    np.save(base / "init.npy", init)
    m = _fit(base / "out", pattern, base / "init.npy", "--weight_column", "w")
    w = table.column("w").to_numpy()
    km = KMeans(K, init=init.astype(np.float64), n_init=1, max_iter=ROUNDS, tol=0)
    km = km.set_params(algorithm="lloyd").fit(z, sample_weight=w)
    return base / "out", m, km, w


def test_weighted_fit_equals_sklearn_sample_weight(weighted):
    out, m, km, w = weighted
    np.testing.assert_allclose(centroids(out), km.cluster_centers_, rtol=1e-5, atol=1e-5)
    # The same init and order of clusters: the labels are the same ids, not a permutation.
    labels = assignments(out).column("cluster_id").to_numpy()
    np.testing.assert_array_equal(labels, km.labels_)
    assert m["inertia"] == pytest.approx(km.inertia_, rel=1e-6)
    assert m["rounds"] == km.n_iter_
    # The weights really moved the fit away from the unweighted one, or this proves little.
    plain = KMeans(K, init=km.init, n_init=1, max_iter=ROUNDS, tol=0, algorithm="lloyd")
    plain = plain.fit(StandardScaler().fit_transform(features_of(_table())))
    assert np.abs(plain.cluster_centers_ - km.cluster_centers_).max() > 1e-3


def test_cluster_sizes_are_row_counts_and_weights_are_weight_sums(weighted):
    out, m, km, w = weighted
    counts = np.bincount(km.labels_, minlength=K)
    assert m["cluster_sizes"] == counts.tolist()
    np.testing.assert_allclose(m["cluster_weights"], np.bincount(km.labels_, w, minlength=K))
    assert [c["size"] for c in m["clusters"]] == counts.tolist()
    assert [c["weight"] for c in m["clusters"]] == m["cluster_weights"]
    assert m["weight_column"] == "w"
    # Radii: the weighted RMS distance to the centroid (standardized space).
    z = StandardScaler().fit_transform(features_of(_table()))
    sq = ((z - km.cluster_centers_[km.labels_]) ** 2).sum(1)
    radii = np.sqrt(np.bincount(km.labels_, sq * w, K) / np.bincount(km.labels_, w, K))
    np.testing.assert_allclose([c["radius"] for c in m["clusters"]], radii, rtol=1e-5)


def test_integer_weights_equal_repeated_rows(tmp_path):
    """Each row repeated w times (w = 0: dropped), unweighted, fits the same centroids.
    --standardize none: the z-scores of the repeated rows would differ (unweighted)."""
    table = _table(1500, seed=4)
    w = table.column("w").to_numpy().astype(int)
    x = features_of(table)
    init = x[np.random.default_rng(2).choice(len(x), K, replace=False)].astype(np.float32)
    np.save(tmp_path / "init.npy", init)
    pattern = write_shards(table, tmp_path / "w", "parquet", shards=2)
    none = ("--standardize", "none")
    m = _fit(tmp_path / "wout", pattern, tmp_path / "init.npy", "--weight_column", "w", *none)
    repeated = table.take(np.repeat(np.arange(table.num_rows), w)).drop_columns(["w"])
    repeated = repeated.set_column(0, "id", pa.array(np.arange(repeated.num_rows)))
    pattern_r = write_shards(repeated, tmp_path / "r", "parquet", shards=2)
    r = _fit(tmp_path / "rout", pattern_r, tmp_path / "init.npy", *none)
    np.testing.assert_allclose(
        centroids(tmp_path / "wout"), centroids(tmp_path / "rout"), rtol=1e-6
    )
    assert m["inertia"] == pytest.approx(r["inertia"], rel=1e-6)
    assert m["rounds"] == r["rounds"]
    np.testing.assert_allclose(m["cluster_weights"], r["cluster_sizes"])
