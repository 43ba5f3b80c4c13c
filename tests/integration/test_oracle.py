"""The fit job against scikit-learn and NumPy on the same data."""

import glob
import os

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from helpers import (
    assignments,
    centroids,
    features_of,
    fit,
    keras_view_equals_the_model,
    metrics,
    rejected,
)


@pytest.fixture(scope="module")
def lloyd(blob_table, blob_parquet, tmp_path_factory):
    """(fit(max_rounds) -> its output, the initial centroids, the z-scored rows): K=4 from
    the same 4 z-scored rows, --tol 0, the standardized shards kept; each fit run once,
    for every test that reads it."""
    z = StandardScaler().fit_transform(features_of(blob_table))
    init = z[np.random.default_rng(1).choice(len(z), 4, replace=False)].astype(np.float32)
    base = tmp_path_factory.mktemp("lloyd")
    np.save(base / "init.npy", init)
    outputs = {}

    def fitted(max_rounds):
        if max_rounds not in outputs:
            out = base / f"out{max_rounds}"
            args = ["--input", blob_parquet, "--k", 4, "--id_column", "id", "--tol", 0]
            args += ["--max_rounds", max_rounds, "--init", base / "init.npy"]
            assert fit(out, *args, "--keep_standardized") == 0
            outputs[max_rounds] = out
        return outputs[max_rounds]

    return fitted, init, z


def test_standardization_equals_standard_scaler(blob_table, lloyd):
    out = lloyd[0](1)
    # The kept shards hold the rows as read; the rounds standardize them as they load them.
    from transforms.beam.shards import iter_standardized

    paths = glob.glob(os.path.join(out, "_work", "shards", "*.arrow"))
    ids, rows = [], []
    for path in paths:
        for batch, z in iter_standardized(path, 5, 1000, columns=["id"]):
            ids.append(batch.column("id").to_numpy())
            rows.append(z)
    ours = np.concatenate(rows)[np.argsort(np.concatenate(ids))]
    assert ours.dtype == np.float32
    expected = StandardScaler().fit_transform(features_of(blob_table))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    # the columns really differed in scale, or this proves little
    assert np.ptp(np.log10(features_of(blob_table).std(axis=0))) > 2


@pytest.mark.parametrize("max_rounds", [1, 4, 50])
def test_same_init_gives_sklearn_lloyd(lloyd, max_rounds):
    """The centroids, inertia, rounds and labels of scikit-learn's Lloyd from the same
    start; each row's distance is NumPy's to its nearest centroid."""
    fitted, init, z = lloyd
    out = fitted(max_rounds)
    km = KMeans(
        4, init=init.astype(np.float64), n_init=1, max_iter=max_rounds, tol=0, algorithm="lloyd"
    ).fit(z)
    np.testing.assert_allclose(centroids(out), km.cluster_centers_, rtol=1e-5, atol=1e-6)
    m = metrics(out)
    assert m["inertia"] == pytest.approx(km.inertia_, rel=1e-6)
    assert m["rounds"] == km.n_iter_
    assert m["converged"] == (km.n_iter_ < max_rounds)
    assert m["max_rounds"] == max_rounds
    table = assignments(out)
    labels = table.column("cluster_id").to_numpy()
    np.testing.assert_array_equal(labels, km.labels_)
    assert m["cluster_sizes"] == np.bincount(km.labels_, minlength=4).tolist()
    c = centroids(out).astype(np.float64)
    d = np.sqrt(((z[:, None, :] - c[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(labels, d.argmin(1))
    np.testing.assert_allclose(table.column("distance").to_numpy(), d.min(1), rtol=1e-4, atol=1e-5)
    assert m["inertia"] == pytest.approx((d.min(1) ** 2).sum(), rel=1e-5)


def test_unscaled_features_give_sklearn_lloyd_on_the_raw_rows(blob_table, blob_parquet, tmp_path):
    """--standardize none: the rows as read (float32, as the step computes) are clustered;
    centroids.csv and centroids.npy are the same centroids, and the model serves raw rows."""
    x = features_of(blob_table).astype(np.float32).astype(np.float64)
    init = x[np.random.default_rng(2).choice(len(x), 4, replace=False)].astype(np.float32)
    np.save(tmp_path / "init.npy", init)
    out = tmp_path / "out"
    args = ["--input", blob_parquet, "--k", 4, "--id_column", "id", "--tol", 0]
    args += ["--max_rounds", 50, "--init", tmp_path / "init.npy", "--standardize", "none"]
    assert fit(out, *args) == 0
    km = KMeans(4, init=init.astype(np.float64), n_init=1, max_iter=50, tol=0, algorithm="lloyd")
    km.fit(x)
    np.testing.assert_allclose(centroids(out), km.cluster_centers_, rtol=1e-5)
    csv = np.genfromtxt(out / "centroids.csv", delimiter=",", names=True)
    np.testing.assert_allclose(csv["f0"], centroids(out)[:, 0], rtol=1e-6)
    m = metrics(out)
    assert m["standardize"] == "none"
    assert m["inertia"] == pytest.approx(km.inertia_, rel=1e-5)
    labels = assignments(out).column("cluster_id").to_numpy()
    np.testing.assert_array_equal(labels, km.labels_)

    import tensorflow as tf

    model = tf.saved_model.load(str(out / "model" / "1"))
    served = model.assign_batch(features_of(blob_table)[:500])["cluster_id"].numpy()
    np.testing.assert_array_equal(served, km.labels_[:500])


def _spherical_kmeans(z: np.ndarray, init: np.ndarray, rounds: int):
    """The reference of --distance cosine, in NumPy: unit rows, each to the centroid of
    largest dot product, each centroid its rows' sum over the sum's norm."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    u, c = unit(z), unit(init.astype(np.float64))
    for _ in range(rounds):
        labels = np.argmax(u @ c.T, axis=1)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, u)
        c = unit(sums)  # the test's starts leave no cluster empty
    dots = u @ c.T
    return c, np.argmax(dots, axis=1), 1.0 - dots.max(axis=1)


@pytest.mark.parametrize("standardize", ["z_score", "none"])
def test_cosine_is_numpy_spherical_kmeans(blob_table, blob_parquet, tmp_path, standardize):
    x = features_of(blob_table)
    z = StandardScaler().fit_transform(x) if standardize == "z_score" else x
    init = z[np.random.default_rng(3).choice(len(z), 4, replace=False)].astype(np.float32)
    np.save(tmp_path / "init.npy", init)
    out = tmp_path / "out"
    args = ["--input", blob_parquet, "--k", 4, "--id_column", "id", "--tol", 0]
    args += ["--max_rounds", 20, "--init", tmp_path / "init.npy", "--distance", "cosine"]
    assert fit(out, *args, "--standardize", standardize) == 0
    c, labels, distance = _spherical_kmeans(z, init, 20)
    np.testing.assert_allclose(centroids(out), c, atol=1e-5)
    table = assignments(out)
    np.testing.assert_array_equal(table.column("cluster_id").to_numpy(), labels)
    np.testing.assert_allclose(table.column("distance").to_numpy(), distance, atol=1e-5)
    m = metrics(out)
    assert (m["distance"], m["standardize"]) == ("cosine", standardize)
    assert m["inertia"] == pytest.approx(distance.sum(), rel=1e-5, abs=1e-4)

    import tensorflow as tf

    model = tf.saved_model.load(str(out / "model" / "1"))  # held: its functions use its variables
    served = model.assign_batch(x[:500])
    np.testing.assert_array_equal(served["cluster_id"].numpy(), labels[:500])
    np.testing.assert_allclose(served["distance"].numpy(), distance[:500], atol=1e-5)
    if standardize == "z_score":  # the Keras 3 view Beam's stock handler loads: cosine too
        keras_view_equals_the_model(out / "model" / "1", x[:25])


def test_cosine_fit_with_defaults_recovers_directions(tmp_path):
    """k-means++ and the refinement on the sample, spherical: rows on 3 directions at
    very different norms (what cosine ignores) are found whole."""
    import pyarrow as pa
    from sklearn.metrics import adjusted_rand_score

    from helpers import write_shards

    rng = np.random.default_rng(5)
    directions = np.eye(3) + 0.05
    truth = rng.integers(0, 3, 3000)
    x = directions[truth] + rng.normal(0, 0.05, (3000, 3))
    x *= rng.uniform(0.1, 100, (3000, 1))
    x[1234] = 0.0  # no direction: rejected with its reason
    table = pa.table({"id": np.arange(3000), "f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2]})
    pattern = write_shards(table, tmp_path / "in", "parquet", shards=3)
    out = tmp_path / "out"
    args = ["--input", pattern, "--k", 3, "--id_column", "id", "--distance", "cosine"]
    assert fit(out, *args, "--standardize", "none", "--max_rounds", 10) == 0
    labels = assignments(out).column("cluster_id").to_numpy()
    assert adjusted_rand_score(np.delete(truth, 1234), labels) >= 0.99
    np.testing.assert_allclose(np.linalg.norm(centroids(out), axis=1), 1.0, atol=1e-6)
    (bad,) = rejected(out)
    assert bad["values"]["id"] == 1234 and "no direction" in bad["reason"]
    assert (metrics(out)["rows_valid"], metrics(out)["rows_rejected"]) == (2999, 1)
