"""The SavedModel, the score job, and the library PTransforms in a user's own pipeline."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli import main
from transforms import AssignClusters, KMeans

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

FEATURES = [f"f{j}" for j in range(4)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A fit on 2000 rows; 500 held-out rows of the same distribution."""
    base = tmp_path_factory.mktemp("fitted")
    table = scaled_blobs(2500, 4, 3, seed=8, cluster_std=2.0)
    train, held_out = table.slice(0, 2000), table.slice(2000)
    pattern = write_shards(train, base / "in", "parquet", shards=2)
    assert (
        fit(base / "out", "--input", pattern, "--k", 3, "--id_column", "id", "--max_rounds", 30)
        == 0
    )
    return base, pattern, features_of(train), features_of(held_out)


def _numpy_nearest(raw_train, out, x):
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    c = centroids(out).astype(np.float64)
    d = np.sqrt(((((x - mean) / std)[:, None, :] - c[None]) ** 2).sum(-1))
    return d


def _check(labels, distances, d):
    order = np.sort(d, axis=1)
    clear = order[:, 1] - order[:, 0] > 1e-3  # away from ties
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(labels[clear], d.argmin(1)[clear])
    np.testing.assert_allclose(distances, d.min(1), rtol=1e-4, atol=1e-5)


def test_both_signatures_equal_numpy_nearest_centroid(fitted):
    base, _, raw_train, x = fitted
    model = tf.saved_model.load(str(base / "out" / "model" / "1"))
    d = _numpy_nearest(raw_train, base / "out", x)

    raw = model.signatures["predict_raw"](
        **{f: tf.constant(x[:, j], tf.float32) for j, f in enumerate(FEATURES)}
    )
    assert raw["cluster_id"].dtype == tf.int64 and raw["distance"].dtype == tf.float32
    _check(raw["cluster_id"].numpy(), raw["distance"].numpy(), d)

    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={
                    f: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
                    for f, v in zip(FEATURES, row)
                }
            )
        ).SerializeToString()
        for row in x
    ]
    served = model.signatures["serving_default"](examples=tf.constant(examples))
    _check(served["cluster_id"].numpy(), served["distance"].numpy(), d)


def test_missing_or_nan_feature_is_an_error(fitted):
    base = fitted[0]
    model = tf.saved_model.load(str(base / "out" / "model" / "1"))
    inputs = {f: tf.constant([1.0, 2.0]) for f in FEATURES}
    inputs["f2"] = tf.constant([1.0, np.nan])
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        model.signatures["predict_raw"](**inputs)
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                f: tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))
                for f in FEATURES[:3]
            }
        )
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="f3"):
        model.signatures["serving_default"](examples=tf.constant([example.SerializeToString()]))


def test_score_equals_fit_assignments(fitted, tmp_path):
    base, pattern, _, _ = fitted
    assert (
        main(
            [
                "score",
                "--model",
                str(base / "out"),
                "--input",
                pattern,
                "--output",
                str(tmp_path / "scored"),
                "--id_column",
                "id",
            ]
        )
        == 0
    )
    ours, theirs = assignments(tmp_path / "scored"), assignments(base / "out")
    np.testing.assert_array_equal(ours.column("id"), theirs.column("id"))
    np.testing.assert_array_equal(ours.column("cluster_id"), theirs.column("cluster_id"))
    np.testing.assert_allclose(
        ours.column("distance"), theirs.column("distance"), rtol=1e-5, atol=1e-6
    )


def test_score_rejects_bad_rows(fitted, tmp_path):
    base = fitted[0]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(
        "id,f0,f1,f2,f3\n1,1,2,3,4\n2,1,x,3,4\n3,1,2,,4\n4,5,6,7,8\n"
    )
    assert (
        main(
            [
                "score",
                "--model",
                str(base / "out"),
                "--input",
                str(tmp_path / "in" / "*.csv"),
                "--output",
                str(tmp_path / "scored"),
                "--id_column",
                "id",
            ]
        )
        == 0
    )
    m = metrics(tmp_path / "scored")
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (4, 2, 2)
    assert sorted(r["column"] for r in rejected(tmp_path / "scored")) == ["f1", "f2"]
    assert sorted(assignments(tmp_path / "scored").column("id").to_pylist()) == [1, 4]


def test_transforms_in_a_user_pipeline(tmp_path):
    """KMeans on dict rows, then AssignClusters with the model it wrote."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(20, 1, (60, 2))])
    rows = [{"key": f"r{i}", "a": float(a), "b": float(b)} for i, (a, b) in enumerate(x)]
    with BeamTestPipeline(runner="DirectRunner") as p:
        fitted = (
            p
            | beam.Create(rows)
            | KMeans(
                k=2,
                features=["a", "b"],
                output_dir=str(tmp_path / "model"),
                max_rounds=20,
                seed=3,
                passthrough=pa.schema([pa.field("key", pa.string())]),
            )
        )
        sizes = fitted["final"] | beam.Map(lambda p: sorted(p.counts.tolist()))
        assert_that(sizes, equal_to([[60, 60]]), label="ClusterSizes")

    with BeamTestPipeline(runner="DirectRunner") as p:
        scored = (
            p
            | beam.Create(rows)
            | AssignClusters(str(tmp_path / "model" / "model"))
            | beam.Map(
                lambda r: (r["key"][1:].isdigit() and int(r["key"][1:]) < 60, r["cluster_id"])
            )
            | beam.Distinct()
        )
        # the first 60 rows share one cluster, the last 60 the other
        assert_that(scored | beam.combiners.Count.Globally(), equal_to([2]))
