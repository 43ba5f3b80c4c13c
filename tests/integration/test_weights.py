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


def test_rows_of_weight_zero_are_assigned_and_move_nothing(tmp_path):
    """Far outliers of weight 0 beside the rows: the same centroids as without them, and
    every outlier still gets a cluster. (--standardize none: the unweighted z-score's
    statistics would include the outliers.)"""
    table = _table(1200, seed=5)
    table = table.set_column(table.schema.get_field_index("w"), "w", pa.array(np.ones(1200)))
    x = features_of(table)
    outliers = pa.table(
        {
            "id": pa.array(np.arange(1200, 1210)),
            **{f"f{j}": pa.array(x[:10, j] * 50 + 1e6) for j in range(4)},
            "w": pa.array(np.zeros(10)),
        }
    )
    init = x[[0, 300, 600, 900]].astype(np.float32)
    np.save(tmp_path / "init.npy", init)
    none = ("--standardize", "none", "--weight_column", "w")
    both = write_shards(pa.concat_tables([table, outliers]), tmp_path / "both", "csv", 2)
    m = _fit(tmp_path / "both_out", both, tmp_path / "init.npy", *none)
    alone = write_shards(table, tmp_path / "alone", "csv", 2)
    r = _fit(tmp_path / "alone_out", alone, tmp_path / "init.npy", *none)
    np.testing.assert_allclose(
        centroids(tmp_path / "both_out"), centroids(tmp_path / "alone_out"), rtol=1e-6
    )
    assert m["inertia"] == pytest.approx(r["inertia"], rel=1e-6)
    assert m["rows_valid"] == 1210 and sum(m["cluster_sizes"]) == 1210
    assert m["cluster_weights"] == r["cluster_weights"]
    assigned = assignments(tmp_path / "both_out")
    assert assigned.num_rows == 1210
    assert np.isfinite(assigned.column("distance").to_numpy()[-10:]).all()


def test_bad_weights_go_to_the_dead_letter_with_their_reason(tmp_path):
    text = "id,a,b,w\n" + "".join(f"{i},{i % 7},{i % 5},1\n" for i in range(20))
    text += "20,1,2,-1\n21,1,2,nan\n22,1,2,\n23,1,2,heavy\n24,1,2,inf\n25,x,2,-3\n26,1,2,0\n"
    (tmp_path / "in.csv").write_text(text)
    out = tmp_path / "out"
    args = ["--input", tmp_path / "in.csv", "--id_column", "id", "--weight_column", "w"]
    assert fit(out, *args, "--k", 2, "--n_init", 1, "--max_rounds", 2) == 0
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (27, 21, 6)
    assert m["features"] == ["a", "b"]  # the weight column is no default feature
    why = {int(r["values"]["id"]): (r["column"], r["reason"]) for r in rejected(out)}
    assert why == {
        20: ("w", "negative weight -1.0"),
        21: ("w", "NaN"),
        22: ("w", "empty value"),
        23: ("w", "non-numeric value 'heavy'"),
        24: ("w", "infinite value"),
        25: ("a", "non-numeric value 'x'"),  # the features' reasons come first
    }


def test_cosine_with_weights_equals_a_numpy_spherical_reference(tmp_path):
    """Spherical K-Means with weights: each centroid the normalized weighted sum of its
    unit rows (--standardize none: the rows as read, divided by their norms)."""
    table = _table(1500, seed=6)
    x = features_of(table)
    x = (x - x.mean(0)) / x.std(0)  # about the origin, so that the angles differ widely
    table = pa.table(
        {"id": table.column("id"), **{f"f{j}": x[:, j] for j in range(4)}, "w": table["w"]}
    )
    w = table.column("w").to_numpy()
    u = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
    c = u[np.random.default_rng(3).choice(len(u), K, replace=False)]
    np.save(tmp_path / "init.npy", c.astype(np.float32))
    pattern = write_shards(table, tmp_path / "in", "parquet", 2)
    args = ("--weight_column", "w", "--distance", "cosine", "--standardize", "none")
    m = _fit(tmp_path / "out", pattern, tmp_path / "init.npy", *args)
    for _ in range(m["rounds"]):
        labels = np.argmax(u @ c.T, axis=1)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, u * w[:, None])
        c = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    np.testing.assert_allclose(centroids(tmp_path / "out"), c, atol=1e-5)
    labels = np.argmax(u @ c.T, axis=1)
    np.testing.assert_array_equal(assignments(tmp_path / "out")["cluster_id"].to_numpy(), labels)
    inertia = float(np.sum(w * (1 - np.sum(u * c[labels], axis=1))))
    assert m["inertia"] == pytest.approx(inertia, rel=1e-5)


def test_library_kmeans_takes_weights_from_dict_rows(tmp_path):
    """KMeans(weight_column=...) on dict rows: the same centroids as scikit-learn's
    weighted fit, and rows with a bad weight in the rejected output."""
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.beam.kmeans import KMeans as BeamKMeans

    rng = np.random.default_rng(8)
    x = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(6, 1, (60, 2))])
    w = rng.integers(1, 5, 120).astype(float)
    rows = [{"a": a, "b": b, "w": wi} for (a, b), wi in zip(x, w)]
    rows += [{"a": 1.0, "b": 1.0, "w": -2.0}, {"a": 1.0, "b": 1.0}]
    z = StandardScaler().fit_transform(x)
    init = z[[0, 119]]
    km = KMeans(2, init=init, n_init=1, max_iter=10, tol=0, algorithm="lloyd")
    km = km.fit(z, sample_weight=w)
    with beam.Pipeline() as p:
        fitted = (
            p
            | beam.Create(rows)
            | BeamKMeans(
                2,
                ["a", "b"],
                str(tmp_path / "model"),
                init=init,
                tol=0,
                max_rounds=10,
                weight_column="w",
            )
        )
        reasons = fitted["rejected"] | beam.Map(lambda line: __import__("json").loads(line))
        assert_that(
            reasons | beam.Map(lambda r: r["reason"]),
            equal_to(["weight 'w' is negative: -2.0", "weight 'w' is missing"]),
            label="rejected",
        )
        got = fitted["state"] | beam.Map(lambda s: s.centroids)
        assert_that(
            got | beam.Map(lambda c: bool(np.allclose(c, km.cluster_centers_, atol=1e-5))),
            equal_to([True]),
            label="centroids",
        )
