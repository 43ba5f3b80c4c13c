"""Each row's nearest centroids (`--top_n`, the model's nearest_cluster_ids and
nearest_distances) against NumPy's distances to every centroid: ids exact, ties to the
lowest id, distances to 1e-5, in the units of `distance` (Euclidean, or 1 - cos), on
fit's assignments, `score`, both SavedModel signatures, AssignClusters and
KMeansModelHandler."""

import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import AssignClusters, KMeansModelHandler, export_model
from transforms.step.preprocessing import Standardizer

from helpers import (
    assignments,
    centroids,
    features_of,
    fit,
    scaled_blobs,
    score,
    tf_example,
    write_shards,
)

FEATURES = ["f0", "f1", "f2"]
COMMON = ("--n_init", 1, "--init_refine_rounds", 0, "--max_rounds", 3, "--id_column", "id")


@pytest.fixture(scope="module")
def euclidean(tmp_path_factory):
    """(fit output, raw rows float64 [n, 3], CSV input pattern): K=4, --top_n 3."""
    base = tmp_path_factory.mktemp("nearest_euclidean")
    table = scaled_blobs(400, 3, 4, seed=3)
    pattern = write_shards(table, base / "in", "csv", shards=2)
    out = base / "out"
    assert fit(out, "--input", pattern, "--k", 4, "--top_n", 3, *COMMON) == 0
    return out, features_of(table), pattern


@pytest.fixture(scope="module")
def cosine(tmp_path_factory):
    """(fit output, raw rows float64 [n, 3], Parquet input pattern): K=7, cosine,
    --top_n 6 (more than the model serves)."""
    base = tmp_path_factory.mktemp("nearest_cosine")
    table = scaled_blobs(500, 3, 7, seed=4)
    pattern = write_shards(table, base / "in", "parquet", shards=2)
    out = base / "out"
    args = ("--k", 7, "--distance", "cosine", "--top_n", 6, *COMMON)
    assert fit(out, "--input", pattern, *args) == 0
    return out, features_of(table), pattern


def oracle(out, x: np.ndarray, n: int, cosine: bool = False):
    """NumPy: (ids int64 [r, n], distances float64 [r, n]) of the `n` nearest centroids
    of raw rows `x` float64 [r, D], ascending, ties to the lowest id (a stable sort)."""
    z = Standardizer(str(out / "transform_fn"), x.shape[1])(x).astype(np.float64)
    c = centroids(out).astype(np.float64)
    sq = ((z[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)  # [r, K]
    d = sq / 2.0 if cosine else np.sqrt(sq)
    ids = np.argsort(d, axis=1, kind="stable")[:, :n]
    return ids, np.take_along_axis(d, ids, axis=1)


def check(ids, distances, out, x, cosine=False):
    """`ids` [r, n] and `distances` [r, n] against the oracle for the rows `x`."""
    ids, distances = np.asarray(ids), np.asarray(distances, np.float64)
    want_ids, want = oracle(out, x, ids.shape[1], cosine)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(distances, want, rtol=1e-5, atol=1e-5)


def csv_lists(column: pa.Array, kind) -> np.ndarray:
    """A CSV cell `3;1;4` per row -> [r, n] values."""
    return np.array([[kind(v) for v in cell.split(";")] for cell in column.to_pylist()])


def test_fit_assignments_hold_the_nearest_centroids_in_csv(euclidean):
    out, x, _ = euclidean
    table = assignments(out)
    rows = x[table.column("id").to_numpy()]
    ids = csv_lists(table.column("nearest_cluster_ids"), int)
    distances = csv_lists(table.column("nearest_distances"), float)
    assert ids.shape == (len(rows), 3)
    check(ids, distances, out, rows)
    np.testing.assert_array_equal(ids[:, 0], table.column("cluster_id").to_numpy())
    np.testing.assert_allclose(distances[:, 0], table.column("distance").to_numpy(), rtol=1e-5)


def test_fit_assignments_hold_the_nearest_centroids_cosine_parquet(cosine):
    out, x, _ = cosine
    table = assignments(out)
    assert table.schema.field("nearest_cluster_ids").type == pa.list_(pa.int64())
    assert table.schema.field("nearest_distances").type == pa.list_(pa.float32())
    ids = np.array(table.column("nearest_cluster_ids").to_pylist())
    distances = np.array(table.column("nearest_distances").to_pylist())
    assert ids.shape == (len(x), 6)
    check(ids, distances, out, x[table.column("id").to_numpy()], cosine=True)


def test_score_writes_top_n_and_refuses_more_than_k(euclidean, tmp_path, capsys):
    out, x, pattern = euclidean
    assert score(out, tmp_path / "all", "--input", pattern, "--id_column", "id", "--top_n", 4) == 0
    table = assignments(tmp_path / "all")
    ids = csv_lists(table.column("nearest_cluster_ids"), int)
    check(
        ids,
        csv_lists(table.column("nearest_distances"), float),
        out,
        x[table.column("id").to_numpy()],
    )

    assert score(out, tmp_path / "none", "--input", pattern, "--id_column", "id") == 0
    assert "nearest_cluster_ids" not in assignments(tmp_path / "none").schema.names
    capsys.readouterr()
    args = ("--input", pattern, "--id_column", "id", "--top_n", 5)
    assert score(out, tmp_path / "five", *args) == 2
    assert "--top_n must be in 0..4 (the model's K), got 5" in capsys.readouterr().err


def test_fit_refuses_top_n_above_the_smallest_k(tmp_path, euclidean, capsys):
    pattern = euclidean[2]
    assert fit(tmp_path / "o", "--input", pattern, "--k", "2,3", "--top_n", 3, *COMMON) == 2
    assert "--top_n must be in 0..2 (the smallest K), got 3" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["euclidean", "cosine"])
def test_both_signatures_serve_the_nearest_min_k_5(which, request):
    out, x, _ = request.getfixturevalue(which)
    model = tf.saved_model.load(str(out / "model" / "1"))
    rows = x[:50].astype(np.float32)  # what both signatures carry
    examples = [tf_example(**{f: [float(v)] for f, v in zip(FEATURES, row)}) for row in rows]
    served = {
        "serving_default": model.signatures["serving_default"](examples=tf.constant(examples)),
        "predict_raw": model.signatures["predict_raw"](
            **{f: tf.constant(rows[:, j]) for j, f in enumerate(FEATURES)}
        ),
        "call": model(tf.constant(rows)),
    }
    k = len(centroids(out))
    for name, outputs in served.items():
        ids = outputs["nearest_cluster_ids"].numpy()
        assert ids.dtype == np.int64 and ids.shape == (50, min(k, 5)), name
        assert outputs["nearest_distances"].dtype == tf.float32, name
        check(ids, outputs["nearest_distances"], out, rows.astype(np.float64), which == "cosine")
        np.testing.assert_array_equal(ids[:, 0], outputs["cluster_id"].numpy())


def test_assign_clusters_and_the_model_handler_give_top_n(cosine):
    out, x, _ = cosine
    rows = [{"i": i, **dict(zip(FEATURES, row))} for i, row in enumerate(x[:20])]
    want_ids, want = oracle(out, x[:20], 7, cosine=True)
    with BeamTestPipeline(runner="FnApiRunner") as p:
        scored = (
            p
            | "Rows" >> beam.Create(rows)
            | "Assign" >> AssignClusters(str(out), top_n=7)
            | "Ids" >> beam.Map(lambda r: (r["i"], r["nearest_cluster_ids"]))
        )
        assert_that(scored, equal_to([(i, list(want_ids[i])) for i in range(20)]), label="All")
        arrays = (
            p
            | "Array" >> beam.Create([x[:20]])
            | "AssignArray" >> AssignClusters(str(out), top_n=2)
            | "Two" >> beam.Map(lambda r: (r["features"][0], r["nearest_cluster_ids"]))
        )
        assert_that(
            arrays, equal_to([(x[i, 0], list(want_ids[i, :2])) for i in range(20)]), label="Two"
        )
        handled = (
            p
            | "Handler" >> beam.Create(rows)
            | "Infer" >> RunInference(KMeansModelHandler(str(out)))
            | "Out"
            >> beam.Map(
                lambda r: (
                    r.example["i"],
                    r.inference["nearest_cluster_ids"],
                    r.inference["nearest_distances"],
                )
            )
        )

        def holds(results):
            results = sorted(results)
            assert [r[0] for r in results] == list(range(20))
            assert [r[1] for r in results] == want_ids[:, :5].tolist()  # the model's min(K, 5)
            np.testing.assert_allclose([r[2] for r in results], want[:, :5], rtol=1e-5, atol=1e-5)

        assert_that(handled, holds, label="Handler")

    with (
        pytest.raises(Exception, match="top_n must be in 0..7"),
        BeamTestPipeline(runner="FnApiRunner") as p,
    ):
        _ = p | beam.Create(rows[:1]) | AssignClusters(str(out), top_n=8)


def test_ties_go_to_the_lowest_id(euclidean, tmp_path):
    """Duplicated centroids: every row is exactly as far from 0 as from 2 (and from 1 as
    from 3), in the model and in the fit's pass (`nearest_centroids`)."""
    import tensorflow_transform as tft

    from transforms.step.step import nearest_centroids

    out, x, _ = euclidean
    c = np.array([[0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], np.float32)
    version = os.path.join(tmp_path, "1")
    transform = tft.TFTransformOutput(str(out / "transform_fn")).transform_savedmodel_dir
    export_model(version, transform, c, FEATURES)
    served = tf.saved_model.load(version)(tf.constant(x[:100]))["nearest_cluster_ids"].numpy()
    z = Standardizer(str(out / "transform_fn"), 3)(x[:100])
    ids, _ = nearest_centroids(z, c, 4)
    for got in (served, ids):
        assert got.shape == (100, 4)
        assert all(row in ([0, 2, 1, 3], [1, 3, 0, 2]) for row in got.tolist()), got
        np.testing.assert_array_equal(got[:, 0] == 0, z[:, 1] > z[:, 0])


def test_rows_go_in_calls_within_the_budget(euclidean, monkeypatch):
    """A budget of a few rows a call (a top_n near a large K) gives the same results."""
    from transforms.beam import assign
    from transforms.beam.assign import LoadedModel
    from transforms.step import step

    out, x, _ = euclidean
    whole = LoadedModel(str(out), top_n=4)(x[:50])
    rng = np.random.default_rng(0)
    rows, c = rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=(4, 3))
    expected = step.nearest_centroids(rows, c, 4)
    monkeypatch.setattr(step, "CALL_BUDGET_BYTES", 4 * (4 + 4 * 3) * 7)  # 7 rows a call
    monkeypatch.setattr(assign, "CALL_BUDGET_BYTES", 4 * (4 + 4 * 3) * 7)
    for got, want in zip(step.nearest_centroids(rows, c, 4), expected):
        np.testing.assert_array_equal(got, want)
    chunked = LoadedModel(str(out), top_n=4)(x[:50])
    assert set(chunked) == set(whole)
    for name, values in whole.items():
        np.testing.assert_array_equal(chunked[name], values, err_msg=name)
