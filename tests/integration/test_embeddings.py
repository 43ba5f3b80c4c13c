"""Embedding (vector) columns end to end: a 768-wide Parquet list column, clustered with
--standardize none --distance cosine; the fit against a NumPy spherical K-Means from the
same start; the fit, `score`, both SavedModel signatures and AssignClusters agree row
for row; rows with a list of another length or a NaN element are rejected.

The suite runs 20k rows; `SHARDMEANS_TEST_EMBEDDING_ROWS=100000` runs the issue's
100k (minutes more: kept out of the suite's budget)."""

import csv
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assignments, centroids, fit, metrics, rejected, score

N, WIDTH, K = int(os.environ.get("SHARDMEANS_TEST_EMBEDDING_ROWS", 20000)), 768, 8
NAMES = [f"emb[{i}]" for i in range(WIDTH)]


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _embeddings(n: int, seed: int) -> np.ndarray:
    """float32 [n, WIDTH]: K directions plus noise, as text embeddings cluster."""
    rng = np.random.default_rng(seed)
    directions = _unit(np.random.default_rng(0).normal(size=(K, WIDTH)))
    rows = directions[rng.integers(0, K, n)] + rng.normal(0, 0.04, (n, WIDTH))
    return rows.astype(np.float32)


def _write(path, x: np.ndarray, bad_rows: bool = False, first_id: int = 0) -> None:
    """Parquet: id (from `first_id`) + emb (list<float>); with `bad_rows`, row 3's list
    is one short and row 7 holds a NaN (both must be rejected)."""
    flat = x.reshape(-1).copy()
    lengths = np.full(len(x), WIDTH)
    if bad_rows:
        flat[7 * WIDTH + 5] = np.nan
        flat = np.delete(flat, 4 * WIDTH - 1)
        lengths[3] = WIDTH - 1
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    emb = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32()))
    ids = np.arange(first_id, first_id + len(x))
    pq.write_table(pa.table({"id": ids, "emb": emb}), path, row_group_size=4096)


def _spherical_lloyd(x: np.ndarray, init: np.ndarray, rounds: int) -> np.ndarray:
    """NumPy spherical K-Means: unit rows, nearest by dot product, centroid = normalized sum."""
    u, c = _unit(x.astype(np.float64)), init.astype(np.float64)
    for _ in range(rounds):
        labels = np.argmax(u @ c.T, axis=1)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, u)
        c = np.where(np.linalg.norm(sums, axis=1, keepdims=True) > 0, _unit(sums + 1e-300), c)
    return c


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    base = tmp_path_factory.mktemp("embeddings")
    (base / "in").mkdir()
    x = _embeddings(N, 1)
    _write(base / "in" / "part-0.parquet", x[: N // 2], bad_rows=True)
    _write(base / "in" / "part-1.parquet", x[N // 2 :], first_id=N // 2)
    init = _unit(x[np.random.default_rng(2).choice(N, K, replace=False)].astype(np.float64))
    np.save(base / "init.npy", init.astype(np.float32))
    out = base / "out"
    args = ["--input", base / "in" / "*.parquet", "--features", "emb", "--id_column", "id"]
    args += ["--k", K, "--standardize", "none", "--distance", "cosine", "--tol", 0]
    args += ["--max_rounds", 5, "--init", base / "init.npy"]
    assert fit(out, *args) == 0
    return out, x, init


def test_a_list_column_is_width_features_and_bad_lists_are_rejected(fitted):
    out, _, _ = fitted
    m = metrics(out)
    assert m["features"] == NAMES
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (N, N - 2, 2)
    reasons = sorted((r["row"], r["column"], r["reason"]) for r in rejected(out))
    assert reasons == [(4, "emb", "767 values where 768 are expected"), (8, "emb", "NaN")]
    with open(out / "centroids.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[-WIDTH:] == NAMES


def test_cosine_fit_is_numpy_spherical_kmeans_from_the_same_start(fitted):
    out, x, init = fitted
    kept = np.setdiff1d(np.arange(N), [3, 7])
    expected = _spherical_lloyd(x[kept], init.astype(np.float32), 5)
    np.testing.assert_allclose(centroids(out), expected, atol=1e-5)
    labels = assignments(out).column("cluster_id").to_numpy()
    np.testing.assert_array_equal(labels, np.argmax(_unit(x[kept]) @ expected.T, axis=1))


def test_fit_score_and_the_savedmodel_agree_row_for_row(fitted, tmp_path):
    out, x, _ = fitted
    import tensorflow as tf

    new = _embeddings(3000, 5)
    (tmp_path / "new").mkdir()
    _write(tmp_path / "new" / "part-0.parquet", new)
    assert score(out, tmp_path / "scored", "--input", tmp_path / "new" / "*.parquet") == 0
    scored = assignments(tmp_path / "scored")
    model = tf.saved_model.load(str(out / "model" / "1"))
    by_tensor = model(tf.constant(new))
    np.testing.assert_array_equal(
        scored.column("cluster_id").to_numpy(), by_tensor["cluster_id"].numpy()
    )
    np.testing.assert_allclose(
        scored.column("distance").to_numpy(), by_tensor["distance"].numpy(), atol=1e-6
    )
    raw = model.signatures["predict_raw"](emb=tf.constant(new[:100]))
    np.testing.assert_array_equal(raw["cluster_id"].numpy(), by_tensor["cluster_id"][:100])
    records = [
        tf.train.Example(
            features=tf.train.Features(
                feature={"emb": tf.train.Feature(float_list=tf.train.FloatList(value=row))}
            )
        ).SerializeToString()
        for row in new[:100]
    ]
    served = model.signatures["serving_default"](examples=tf.constant(records))
    np.testing.assert_array_equal(served["cluster_id"].numpy(), by_tensor["cluster_id"][:100])
    short = records[:1] + [
        tf.train.Example(
            features=tf.train.Features(
                feature={"emb": tf.train.Feature(float_list=tf.train.FloatList(value=new[1][:-1]))}
            )
        ).SerializeToString()
    ]
    with pytest.raises(tf.errors.InvalidArgumentError, match="768 numbers"):
        model.signatures["serving_default"](examples=tf.constant(short))
    # The fit's own assignments are the model's on the training rows.
    fit_rows = assignments(out)
    kept = fit_rows.column("id").to_numpy()
    np.testing.assert_array_equal(
        fit_rows.column("cluster_id").to_numpy(),
        model(tf.constant(x[kept]))["cluster_id"].numpy(),
    )


def test_assign_clusters_takes_a_vector_in_a_dict_row(fitted):
    out, x, _ = fitted
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from transforms import AssignClusters
    from transforms.beam.assign import LoadedModel

    expected = LoadedModel(str(out))(x[:4].astype(np.float64))["cluster_id"]
    rows = [{"i": i, "emb": list(map(float, x[i]))} for i in range(4)]
    rows.append({"i": 9, "emb": [0.0] * 3})
    with beam.Pipeline(runner="FnApiRunner") as p:
        result = p | beam.Create(rows) | AssignClusters(str(out), rejected=True)
        assert_that(
            result["scored"] | beam.Map(lambda r: (r["i"], r["cluster_id"])),
            equal_to([(i, int(expected[i])) for i in range(4)]),
            label="Scored",
        )
        assert_that(
            result["rejected"] | beam.Map(lambda line: "3 values where 768" in line),
            equal_to([True]),
        )
    from transforms import KMeansModelHandler

    handler = KMeansModelHandler(str(out))
    results = handler.run_inference(rows[:4], handler.load_model())
    assert [r.inference["cluster_id"] for r in results] == expected.tolist()
