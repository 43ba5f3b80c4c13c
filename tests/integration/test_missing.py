"""--missing impute end to end: every row kept, a missing value is the mean of the present
ones (in the fit, `score`, the SavedModel, its Keras view and AssignClusters), against
NumPy and scikit-learn on the same imputed data; NaN as read is still a rejection."""

import numpy as np
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans

from helpers import (
    assignments,
    centroids,
    fit,
    keras_view_equals_the_model,
    metrics,
    rejected,
    score,
    write_shards,
)

N, FEATURES = 3000, ["f0", "f1", "f2"]


def _data(seed: int, n: int = N):
    """(rows float64 [n, 3] with NaN where a value is missing (5% of each column), the
    blob of each row): 3 blobs on columns of different scales."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0, 0], [8, 0, 4], [0, 8, -4]], np.float64)
    truth = rng.integers(0, 3, n)
    x = (centers[truth] + rng.normal(0, 1.0, (n, 3))) * [1.0, 100.0, 0.01] + [0, 1e4, 0]
    x[rng.random((n, 3)) < 0.05] = np.nan
    return x, truth


def _table(x: np.ndarray) -> pa.Table:
    columns = {"id": np.arange(len(x))}
    for j, name in enumerate(FEATURES):
        columns[name] = pa.array(x[:, j], mask=np.isnan(x[:, j]))  # null, not NaN
    return pa.table(columns)


def _imputed_z(x: np.ndarray) -> np.ndarray:
    """The oracle's preprocessing: a missing value is its column's mean over the present
    values; the z-score uses the present values' mean and (ddof=0) std."""
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    return (np.where(np.isnan(x), mean, x) - mean) / std


@pytest.fixture(scope="module")
def imputed(tmp_path_factory):
    """(fit output, rows float64 [N, 3] with NaN, the initial centroids float32 [3, 3])."""
    base = tmp_path_factory.mktemp("missing")
    x, _ = _data(3)
    pattern = write_shards(_table(x), base / "in", "parquet", shards=3)
    z = _imputed_z(x)
    init = z[np.random.default_rng(1).choice(N, 3, replace=False)].astype(np.float32)
    np.save(base / "init.npy", init)
    out = base / "out"
    args = ["--input", pattern, "--k", 3, "--id_column", "id", "--missing", "impute"]
    args += ["--init", base / "init.npy", "--tol", 0, "--max_rounds", 20]
    assert fit(out, *args) == 0
    return out, x, init


def test_every_row_is_kept_and_the_imputed_values_are_counted(imputed):
    out, x, _ = imputed
    m = metrics(out)
    assert m["rows_read"] == m["rows_valid"] == N and m["rows_rejected"] == 0
    assert m["missing"] == "impute"
    assert m["values_imputed"] == {f: int(np.isnan(x[:, j]).sum()) for j, f in enumerate(FEATURES)}
    assert min(m["values_imputed"].values()) > 0.03 * N


def test_a_missing_value_is_the_mean_of_the_present_ones(imputed):
    out, x, _ = imputed
    from transforms.step.preprocessing import Standardizer

    standardizer = Standardizer(str(out / "transform_fn"), 3)
    mean, std = standardizer.mean_and_std()
    np.testing.assert_allclose(mean, np.nanmean(x, axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, np.nanstd(x, axis=0), rtol=1e-5)
    # A row with every value missing is the mean itself: 0 after the z-score.
    np.testing.assert_array_equal(standardizer(np.full((1, 3), np.nan)), np.zeros((1, 3)))
    np.testing.assert_allclose(standardizer(x), _imputed_z(x), rtol=1e-5, atol=1e-5)


def test_same_init_gives_sklearn_on_the_imputed_rows(imputed):
    out, x, init = imputed
    z = _imputed_z(x)
    km = KMeans(3, init=init.astype(np.float64), n_init=1, max_iter=20, tol=0, algorithm="lloyd")
    km.fit(z)
    np.testing.assert_allclose(centroids(out), km.cluster_centers_, rtol=1e-5, atol=1e-5)
    labels = assignments(out).column("cluster_id").to_numpy()
    np.testing.assert_array_equal(labels, km.labels_)


def test_score_the_savedmodel_and_its_keras_view_impute_the_same(imputed, tmp_path):
    out, x, _ = imputed
    new, _ = _data(4, n=600)
    pattern = write_shards(_table(new), tmp_path / "new", "parquet", shards=2)
    scored = tmp_path / "scored"
    assert score(out, scored, "--input", pattern, "--id_column", "id") == 0
    m = metrics(scored)
    assert m["rows_valid"] == m["rows_read"] == 600
    assert m["values_imputed"] == {
        f: int(np.isnan(new[:, j]).sum()) for j, f in enumerate(FEATURES)
    }
    table = assignments(scored)
    import tensorflow as tf

    from helpers import tf_example

    model = tf.saved_model.load(str(out / "model" / "1"))
    by_tensor = model(tf.constant(new))["cluster_id"].numpy()
    np.testing.assert_array_equal(table.column("cluster_id").to_numpy(), by_tensor)
    # tf.Example: a missing feature is absent from the record.
    records = [
        tf_example(**{f: [float(v)] for f, v in zip(FEATURES, row) if not np.isnan(v)})
        for row in new[:50]
    ]
    served = model.signatures["serving_default"](examples=tf.constant(records))
    np.testing.assert_array_equal(served["cluster_id"].numpy(), by_tensor[:50])
    with pytest.raises(tf.errors.InvalidArgumentError, match="infinite"):
        model(tf.constant([[np.inf, 0.0, 0.0]]))
    # The Keras 3 view (what Beam's stock TFModelHandlerTensor loads, in a fresh process
    # in tests/integration/test_serving.py) is a second implementation of the arithmetic:
    # it must impute the same.
    keras_view_equals_the_model(out / "model" / "1", new[np.isnan(new).any(axis=1)][:20])


def test_assign_clusters_imputes_a_null_or_absent_feature(imputed):
    out, x, _ = imputed
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from transforms import AssignClusters
    from transforms.beam.assign import LoadedModel

    expected = LoadedModel(str(out))(np.array([[np.nan, 1e4, np.nan], [1.0, np.nan, 0.0]]))
    rows = [{"i": 0, "f1": 1e4, "f2": None}, {"i": 1, "f0": 1.0, "f1": None, "f2": 0.0}]
    rows.append({"i": 2, "f0": float("nan"), "f1": 1e4, "f2": 0.0})  # NaN: a value, rejected
    with beam.Pipeline(runner="FnApiRunner") as p:
        result = p | beam.Create(rows) | AssignClusters(str(out), rejected=True)
        assert_that(
            result["scored"] | beam.Map(lambda r: (r["i"], r["cluster_id"])),
            equal_to([(0, int(expected["cluster_id"][0])), (1, int(expected["cluster_id"][1]))]),
            label="Scored",
        )
        assert_that(result["rejected"] | beam.combiners.Count.Globally(), equal_to([1]))
    # RunInference's handler reads dict rows the same way.
    from transforms import KMeansModelHandler

    handler = KMeansModelHandler(str(out))
    results = handler.run_inference(rows[:2], handler.load_model())
    assert [r.inference["cluster_id"] for r in results] == expected["cluster_id"].tolist()


def test_nan_as_read_and_a_csv_empty_cell(tmp_path):
    """Impute takes an empty CSV cell; a NaN as read stays a rejection, with its reason."""
    (tmp_path / "in").mkdir()
    lines = ["id,a,b"] + [f"{i},{i % 7},{(i * 3) % 11}" for i in range(40)]
    lines[5], lines[9], lines[12] = "4,,3", "8,NaN,2", "11,5,"
    (tmp_path / "in" / "part-0.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ["--input", tmp_path / "in" / "*.csv", "--k", 2, "--id_column", "id"]
    assert fit(out, *args, "--missing", "impute", "--n_init", 1, "--max_rounds", 3) == 0
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (40, 39, 1)
    assert m["values_imputed"] == {"a": 1, "b": 1}
    (record,) = rejected(out)
    # (rows are numbered from 1, after the header)
    assert (record["row"], record["column"]) == (9, "a") and "NaN" in record["reason"]
