"""Edge cases of the fit: empty clusters, K=1, D=1, constant columns, duplicates."""

import numpy as np
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from helpers import assignments, centroids, features_of, fit, metrics, scaled_blobs, write_shards


def _fit_table(table, tmp_path, *args):
    pattern = write_shards(table, tmp_path / "in", "parquet", shards=2)
    out = tmp_path / "out"
    assert fit(out, "--input", pattern, "--id_column", "id", "--max_rounds", 30, *args) == 0
    return out


def test_empty_cluster_is_reseeded_as_sklearn_does(tmp_path, caplog):
    table = scaled_blobs(1500, 3, 3, seed=2)
    z = StandardScaler().fit_transform(features_of(table))
    init = np.vstack([z[:2], [[50.0, 50.0, 50.0]]]).astype(
        np.float32
    )  # the third is far from all rows
    np.save(tmp_path / "init.npy", init)
    out = _fit_table(table, tmp_path, "--k", 3, "--init", tmp_path / "init.npy", "--tol", 0)
    km = KMeans(
        3, init=init.astype(np.float64), n_init=1, max_iter=30, tol=0, algorithm="lloyd"
    ).fit(z)
    np.testing.assert_allclose(centroids(out), km.cluster_centers_, rtol=1e-5, atol=1e-6)
    m = metrics(out)
    assert m["reseeded_clusters"] >= 1 and min(m["cluster_sizes"]) > 0
    assert np.all(np.isfinite(centroids(out)))
    assert "re-seeded 1 empty cluster(s) [2]" in caplog.text


def test_k_equal_1_is_the_mean(tmp_path):
    table = scaled_blobs(800, 3, 2, seed=4)
    out = _fit_table(table, tmp_path, "--k", 1)
    np.testing.assert_allclose(centroids(out), 0.0, atol=1e-5)  # the mean, standardized
    m = metrics(out)
    assert m["inertia"] == pytest.approx(800 * 3, rel=1e-5)  # unit variance per column
    csv = np.genfromtxt(out / "centroids.csv", delimiter=",", names=True)
    np.testing.assert_allclose(
        [csv[f"f{j}"] for j in range(3)], features_of(table).mean(axis=0), rtol=1e-5
    )


def test_one_feature(tmp_path):
    x = np.concatenate([np.full(50, -3.0), np.full(50, 10.0)]) + np.linspace(0, 0.1, 100)
    table = pa.table({"id": np.arange(100), "f0": x})
    out = _fit_table(table, tmp_path, "--k", 2)
    labels = assignments(out).column("cluster_id").to_numpy()
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[-1]


def test_constant_column_matches_sklearn(tmp_path):
    table = scaled_blobs(1000, 3, 3, seed=5, cluster_std=2.0).append_column(
        "f9", pa.array(np.full(1000, 42.0))
    )
    x = features_of(table)
    z = StandardScaler().fit_transform(x)
    init = z[[0, 1, 2]].astype(np.float32)
    np.save(tmp_path / "init.npy", init)
    out = _fit_table(table, tmp_path, "--k", 3, "--init", tmp_path / "init.npy", "--tol", 0)
    km = KMeans(
        3, init=init.astype(np.float64), n_init=1, max_iter=30, tol=0, algorithm="lloyd"
    ).fit(z)
    np.testing.assert_allclose(centroids(out), km.cluster_centers_, rtol=1e-5, atol=1e-6)
    csv = np.genfromtxt(out / "centroids.csv", delimiter=",", names=True)
    np.testing.assert_allclose(csv["f9"], 42.0)

    # The Keras 3 copy of the model (for Beam's stock handler) standardizes the constant
    # column as tf.Transform does (x - mean), also off the training value.
    import keras
    import tensorflow as tf

    rows = np.vstack([x[:50], x[:5] + [0.0, 0.0, 0.0, 1.0]])
    saved = tf.saved_model.load(str(out / "model" / "1"))(tf.constant(rows))
    view = keras.models.load_model(str(out / "model" / "1"))(tf.constant(rows))
    np.testing.assert_array_equal(view["cluster_id"], saved["cluster_id"])
    np.testing.assert_allclose(view["distance"], saved["distance"], rtol=1e-5, atol=1e-6)


def test_k_equal_to_distinct_points_with_duplicates(tmp_path):
    points = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 7.0], [9.0, 9.0], [3.0, -4.0]])
    x = np.repeat(points, [10, 3, 7, 1, 4], axis=0)
    table = pa.table({"id": np.arange(len(x)), "f0": x[:, 0], "f1": x[:, 1]})
    out = _fit_table(table, tmp_path, "--k", 5)
    m = metrics(out)
    assert m["inertia"] == pytest.approx(0.0, abs=1e-6)
    assert sorted(m["cluster_sizes"]) == [1, 3, 4, 7, 10]
    csv = np.genfromtxt(out / "centroids.csv", delimiter=",", names=True)
    found = np.column_stack([csv["f0"], csv["f1"]])
    np.testing.assert_allclose(
        found[np.lexsort(found.T[::-1])], points[np.lexsort(points.T[::-1])], atol=1e-5
    )
