"""The fit job against scikit-learn and NumPy on the same data."""

import glob
import os
import sys

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from helpers import assignments, centroids, features_of, fit, metrics, rejected, run_check


def test_standardization_equals_standard_scaler(blob_table, blob_parquet, tmp_path):
    out = tmp_path / "out"
    assert (
        fit(
            out,
            "--input",
            blob_parquet,
            "--k",
            3,
            "--id_column",
            "id",
            "--max_rounds",
            1,
            "--keep_standardized",
        )
        == 0
    )
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
def test_same_init_gives_sklearn_lloyd(blob_table, blob_parquet, tmp_path, max_rounds):
    z = StandardScaler().fit_transform(features_of(blob_table))
    init = z[np.random.default_rng(1).choice(len(z), 4, replace=False)].astype(np.float32)
    np.save(tmp_path / "init.npy", init)
    out = tmp_path / "out"
    assert (
        fit(
            out,
            "--input",
            blob_parquet,
            "--k",
            4,
            "--id_column",
            "id",
            "--tol",
            0,
            "--max_rounds",
            max_rounds,
            "--init",
            tmp_path / "init.npy",
        )
        == 0
    )

    km = KMeans(
        4, init=init.astype(np.float64), n_init=1, max_iter=max_rounds, tol=0, algorithm="lloyd"
    ).fit(z)
    np.testing.assert_allclose(centroids(out), km.cluster_centers_, rtol=1e-5, atol=1e-6)
    m = metrics(out)
    assert m["inertia"] == pytest.approx(km.inertia_, rel=1e-6)
    assert m["rounds"] == km.n_iter_
    assert m["converged"] == (km.n_iter_ < max_rounds)
    assert m["max_rounds"] == max_rounds
    labels = assignments(out).column("cluster_id").to_numpy()
    np.testing.assert_array_equal(labels, km.labels_)
    assert m["cluster_sizes"] == np.bincount(km.labels_, minlength=4).tolist()


def test_distances_are_numpy_nearest_centroid(blob_table, blob_parquet, tmp_path):
    out = tmp_path / "out"
    assert (
        fit(
            out,
            "--input",
            blob_parquet,
            "--k",
            5,
            "--id_column",
            "id",
            "--seed",
            7,
            "--max_rounds",
            30,
        )
        == 0
    )
    z = StandardScaler().fit_transform(features_of(blob_table))
    c = centroids(out).astype(np.float64)
    d = np.sqrt(((z[:, None, :] - c[None]) ** 2).sum(-1))
    table = assignments(out)
    np.testing.assert_array_equal(table.column("cluster_id").to_numpy(), d.argmin(1))
    np.testing.assert_allclose(table.column("distance").to_numpy(), d.min(1), rtol=1e-4, atol=1e-5)
    assert metrics(out)["inertia"] == pytest.approx((d.min(1) ** 2).sum(), rel=1e-5)


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
        np.save(tmp_path / "rows.npy", x[:25])
        env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"}
        env["HOME"] = os.environ.get("HOME", str(tmp_path))
        args = (out / "model" / "1", tmp_path / "rows.npy", "keras3")
        done = run_check("stock_tf_handler", *args, env=env)
        assert done.stdout.strip().splitlines()[-1:] == ["ok"], done.stderr[-3000:]


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
