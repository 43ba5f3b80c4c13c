"""Categorical features where the model is served: both signatures, `model(...)`,
`AssignClusters` and `KMeansModelHandler` give what a NumPy nearest centroid gives over
the fit's own transform, and the fit's assignments row for row; an unseen value is the
feature's __other__ slot, a missing one its __missing__ slot (impute) or an error."""

import glob
import json
import os
import pickle
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from transforms import AssignClusters, KMeans, KMeansModelHandler, export_model
from transforms.beam.assign import LoadedModel, describe_model
from transforms.beam.shards import (
    CATEGORIES_COLUMN,
    FEATURES_COLUMN,
    matrix_to_categories,
    matrix_to_features,
)
from transforms.core.categorical import MISSING_VALUE, as_text
from transforms.step.preprocessing import Standardizer

from helpers import tf_example

NUMERIC, CATEGORICAL = ["a", "b"], ["color", "city"]
M = 4  # max_categories: "city" has 7 codes, so its 3 rarest share __other__
N, K = 3000, 3
COLORS = ["red", "green", "blue"]


def _rows():
    """N dict rows: three groups, each around its own (a, b) and mostly one color; city an
    int code (declared categorical) of skewed frequencies; some values None (imputed)."""
    rng = np.random.default_rng(7)
    group = rng.integers(0, K, N)
    centers = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    ab = centers[group] + rng.normal(0, 1, (N, 2))
    color = np.where(rng.random(N) < 0.9, group, rng.integers(0, K, N))
    city = rng.choice(7, N, p=[0.3, 0.25, 0.2, 0.15, 0.05, 0.03, 0.02])
    rows = []
    for i in range(N):
        row = {"id": i, "a": float(ab[i, 0]), "b": float(ab[i, 1])}
        row["color"], row["city"] = COLORS[color[i]], int(city[i])
        if i % 37 == 5:
            row["color"] = None
        if i % 41 == 7:
            row["b"] = None
        if i % 53 == 11:
            del row["city"]  # absent: missing too
        rows.append(row)
    return rows


def _raw(rows):
    """Dict rows -> (float64 [n, 2], NaN where missing; object [n, 2] text,
    MISSING_VALUE where missing): what the fit's transform takes."""
    x = np.array([[np.nan if r.get(f) is None else r[f] for f in NUMERIC] for r in rows])
    text = [
        [MISSING_VALUE if r.get(c) is None else as_text(r[c]) for c in CATEGORICAL] for r in rows
    ]
    return x, np.array(text, dtype=object).reshape(len(rows), len(CATEGORICAL))


def _example(row) -> bytes:
    """A row as a tf.Example: numbers in float_list, color in bytes_list, the city code in
    int64_list; a missing value absent."""
    features = {f: [float(row[f])] for f in NUMERIC if row.get(f) is not None}
    if row.get("color") is not None:
        features["color"] = [row["color"].encode()]
    if row.get("city") is not None:
        features["city"] = [int(row["city"])]
    return tf_example(**features)


def _keep(pcoll, directory: str, label: str):
    """Each element pickled to a file of its own in `directory` (read back by `_kept`)."""

    def write(element):
        with open(os.path.join(directory, f"{uuid.uuid4().hex}.pkl"), "wb") as f:
            pickle.dump(element, f)

    os.makedirs(directory, exist_ok=True)
    return pcoll | label >> beam.Map(write)


def _kept(directory: str) -> list:
    found = []
    for path in glob.glob(os.path.join(directory, "*.pkl")):
        with open(path, "rb") as f:
            found.append(pickle.load(f))
    return found


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(fit output, model dir, rows, {id: the fit's cluster_id}, a reject model's dir)."""
    base = tmp_path_factory.mktemp("categorical_serving")
    out, collected = str(base / "fit"), str(base / "assignments")
    rows = _rows()
    with BeamTestPipeline(runner="DirectRunner") as p:
        fit = (
            p
            | beam.Create(rows)
            | KMeans(
                k=K,
                features=["a", "color", "b", "city"],
                categorical=CATEGORICAL,
                max_categories=M,
                missing="impute",
                output_dir=out,
                passthrough=pa.schema([("id", pa.int64())]),
                max_rounds=20,
                seed=1,
            )
        )
        _keep(fit["assignments"], collected, "KeepAssignments")
    table = pa.Table.from_batches(_kept(collected))
    assigned = dict(zip(table.column("id").to_pylist(), table.column("cluster_id").to_pylist()))
    assert len(assigned) == N  # imputed: every row kept

    # The same transform and centroids with --missing reject.
    import tensorflow_transform as tft

    model_dir = os.path.join(out, "model", "1")
    centroids = tf.saved_model.load(model_dir).centroids.numpy()
    reject_dir = str(base / "reject" / "1")
    export_model(
        reject_dir,
        tft.TFTransformOutput(os.path.join(out, "transform_fn")).transform_savedmodel_dir,
        centroids,
        NUMERIC,
        missing="reject",
        categorical=CATEGORICAL,
    )
    return out, model_dir, rows, assigned, reject_dir


def _oracle(fit_output, model_dir, rows):
    """(cluster_id int64 [n], distances float64 [n, K]): NumPy over the fit's transform."""
    x, text = _raw(rows)
    z = Standardizer(os.path.join(fit_output, "transform_fn"), 2, 2)(x, text).astype(np.float64)
    c = tf.saved_model.load(model_dir).centroids.numpy().astype(np.float64)
    distances = np.sqrt(((z[:, None, :] - c[None]) ** 2).sum(axis=2))
    return distances.argmin(axis=1), distances


def _predict_raw(model, rows):
    x, _ = _raw(rows)
    inputs = {f: tf.constant(x[:, j], tf.float32) for j, f in enumerate(NUMERIC)}
    for c in CATEGORICAL:
        inputs[c] = tf.constant([as_text(r[c]) if r.get(c) is not None else "" for r in rows])
    return model.signatures["predict_raw"](**inputs)


def test_the_model_records_its_features(fitted):
    _, model_dir, *_ = fitted
    model = tf.saved_model.load(model_dir)
    assert [f.decode() for f in model.feature_names.numpy()] == NUMERIC
    assert [f.decode() for f in model.categorical_features.numpy()] == CATEGORICAL
    assert model.centroids.shape == (K, 2 + 2 * (M + 2))
    description = describe_model(model_dir)
    features, outputs, missing = description  # what pipeline/score.py unpacks
    assert (features, missing, description.categorical) == (NUMERIC, "impute", CATEGORICAL)
    assert "cluster_id" in outputs
    # A stock Keras handler cannot carry text: no Keras view is written.
    assert not os.path.exists(os.path.join(model_dir, "config.json"))


def test_signatures_and_calls_agree_with_a_numpy_nearest_centroid(fitted):
    out, model_dir, rows, assigned, _ = fitted
    want, distances = _oracle(out, model_dir, rows)
    nearest = distances[np.arange(N), want]
    model = tf.saved_model.load(model_dir)
    x, text = _raw(rows)
    served = model.signatures["serving_default"](examples=tf.constant([_example(r) for r in rows]))
    raw = _predict_raw(model, rows)
    # model(...) and LoadedModel take "" (or None) as missing, as the signatures do.
    given = np.where(text == MISSING_VALUE, "", text)
    called = model(tf.constant(x), tf.constant(given.tolist()))
    loaded = LoadedModel(model_dir)(x, [[r.get(c) for c in CATEGORICAL] for r in rows])
    for got in (served, raw, called, loaded):
        np.testing.assert_array_equal(np.asarray(got["cluster_id"]), want)
        np.testing.assert_allclose(np.asarray(got["distance"]), nearest, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        called["nearest_distances"].numpy(), np.sort(distances, axis=1), rtol=1e-5, atol=1e-5
    )
    # The fit assigned every row as the model does.
    np.testing.assert_array_equal([assigned[r["id"]] for r in rows], want)
    # A code sent as text is the same value as the int64_list's.
    as_bytes = model.signatures["serving_default"](
        examples=tf.constant(
            [tf_example(a=[float(x[i, 0])], b=[1.0], color=[b"red"], city=[b"3"]) for i in range(5)]
        )
    )
    as_int = model.signatures["serving_default"](
        examples=tf.constant(
            [tf_example(a=[float(x[i, 0])], b=[1.0], color=[b"red"], city=[3]) for i in range(5)]
        )
    )
    np.testing.assert_array_equal(as_bytes["distance"], as_int["distance"])


def _slots(mean_and_std, row, color_slot: int, city_slot: int) -> np.ndarray:
    """float64 [D]: a row's place by hand: its numbers (x - mean) / std, then one 1 in each
    categorical feature's M + 2 slots, at the given ones."""
    mean, std = mean_and_std
    z = np.zeros(2 + 2 * (M + 2))
    z[:2] = (np.array([row["a"], row["b"]]) - mean[:2]) / std[:2]
    z[2 + color_slot] = z[2 + (M + 2) + city_slot] = 1.0
    return z


def _all_distances(model, row) -> np.ndarray:
    """The model's distance to each of the K centroids, in cluster id order."""
    out = model.signatures["serving_default"](examples=tf.constant([_example(row)]))
    ids, d = out["nearest_cluster_ids"].numpy()[0], out["nearest_distances"].numpy()[0]
    return d[np.argsort(ids)].astype(np.float64)


def test_unseen_and_rare_values_are_other_and_missing_ones_are_missing(fitted):
    out, model_dir, *_ = fitted
    model = tf.saved_model.load(model_dir)
    c = model.centroids.numpy().astype(np.float64)
    standardizer = Standardizer(os.path.join(out, "transform_fn"), 2, 2)
    vocabularies, mean_and_std = standardizer.vocabularies(), standardizer.mean_and_std()
    assert vocabularies[1] == ["0", "1", "2", "3"]  # the M most frequent codes
    other, missing = M, M + 1
    red = vocabularies[0].index("red")
    cases = [
        ({"a": 1.0, "b": 2.0, "color": "violet", "city": 2}, other, 2),  # unseen
        ({"a": 1.0, "b": 2.0, "color": "red", "city": 6}, red, other),  # rare: past the M
        ({"a": 1.0, "b": 2.0, "color": "red", "city": 99}, red, other),  # unseen code
        ({"a": 1.0, "b": 2.0, "color": None, "city": 0}, missing, 0),  # missing
        ({"a": -1.0, "b": 0.5, "color": "red"}, red, missing),  # absent
    ]
    for row, color_slot, city_slot in cases:
        z = _slots(mean_and_std, row, color_slot, city_slot)
        want = np.sqrt(((z[None] - c) ** 2).sum(axis=1))
        np.testing.assert_allclose(_all_distances(model, row), want, rtol=1e-5, atol=1e-5)
    # An empty bytes value is missing, as an absent one.
    empty = tf_example(a=[1.0], b=[2.0], color=[b""], city=[0])
    absent = tf_example(a=[1.0], b=[2.0], city=[0])
    served = model.signatures["serving_default"](examples=tf.constant([empty, absent]))
    assert served["distance"].numpy()[0] == served["distance"].numpy()[1]


def test_a_model_that_rejects_names_the_missing_feature(fitted):
    _, _, rows, _, reject_dir = fitted
    model = tf.saved_model.load(reject_dir)
    serve = model.signatures["serving_default"]
    full = tf_example(a=[1.0], b=[2.0], color=[b"red"], city=[1])
    serve(examples=tf.constant([full]))  # no error
    for bad, name in (
        (tf_example(a=[1.0], b=[2.0], city=[1]), "color"),  # absent
        (tf_example(a=[1.0], b=[2.0], color=[b"red"], city=[]), "city"),  # no value
        (tf_example(a=[1.0], b=[2.0], color=[b""], city=[1]), "color"),  # empty
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"categorical feature {name} is"):
            serve(examples=tf.constant([full, bad]))
    for bad, name in (
        (tf_example(a=[1.0], b=[2.0], color=[b"red", b"blue"], city=[1]), "color"),
        (tf_example(a=[1.0], b=[2.0], color=[b"red"], city=[1.0]), "city"),  # a float
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"feature {name} must hold one"):
            serve(examples=tf.constant([full, bad]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="categorical feature city is"):
        model.signatures["predict_raw"](
            a=tf.constant([1.0]), b=tf.constant([2.0]), color=tf.constant(["red"]), city=[""]
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="categorical feature color is"):
        LoadedModel(reject_dir)(np.array([[1.0, 2.0]]), [[None, "1"]])


def _scored(rows, model_dir, directory, **kwargs):
    """AssignClusters(rejected=True) over `rows` -> (scored elements, rejected lines)."""
    with BeamTestPipeline(runner="DirectRunner") as p:
        result = p | beam.Create(rows) | AssignClusters(model_dir, rejected=True, **kwargs)
        _keep(result["scored"], os.path.join(directory, "scored"), "KeepScored")
        _keep(result["rejected"], os.path.join(directory, "rejected"), "KeepRejected")
    return _kept(os.path.join(directory, "scored")), _kept(os.path.join(directory, "rejected"))


def test_assign_clusters_gives_the_fit_assignments(fitted, tmp_path):
    out, _, rows, assigned, _ = fitted
    x, text = _raw(rows)
    batch = pa.RecordBatch.from_arrays(
        [
            matrix_to_features(x[:500]),
            matrix_to_categories(text[:500]),
            pa.array([r["id"] for r in rows[:500]], pa.int64()),
        ],
        names=[FEATURES_COLUMN, CATEGORIES_COLUMN, "id"],
    )
    array = np.zeros((2, 2))  # numbers alone: no categorical values
    beam_rows = [beam.Row(**r) for r in rows[500:600] if set(r) == {"id", *NUMERIC, *CATEGORICAL}]
    scored, rejected = _scored([batch, array, *beam_rows, *rows[600:]], out, str(tmp_path))
    got = {}
    for element in scored:
        if isinstance(element, pa.RecordBatch):
            assert CATEGORIES_COLUMN not in element.schema.names
            got.update(
                zip(element.column("id").to_pylist(), element.column("cluster_id").to_pylist())
            )
        else:
            got[element["id"]] = element["cluster_id"]
    want_ids = [r["id"] for r in rows[:500]] + [r.id for r in beam_rows]
    want_ids += [r["id"] for r in rows[600:]]
    assert sorted(got) == sorted(want_ids)
    assert {i: got[i] for i in want_ids} == {i: assigned[i] for i in want_ids}
    assert [json.loads(line)["reason"] for line in rejected] == [
        "an array row has no categorical features"
    ] * 2


def test_assign_clusters_rejects_what_a_rejecting_model_cannot_score(fitted, tmp_path):
    _, _, rows, _, reject_dir = fitted
    good = {"id": 0, "a": 1.0, "b": 2.0, "color": "red", "city": 1}
    bad = [
        (dict(good, id=1, color=None), "feature 'color' is null"),
        ({k: v for k, v in dict(good, id=2).items() if k != "city"}, "feature 'city' is missing"),
        (dict(good, id=3, color=""), "categorical feature 'color' is empty"),
        (dict(good, id=4, b=None, color=None), "feature 'b' is null"),  # a number's first
    ]
    scored, rejected = _scored([good] + [row for row, _ in bad], reject_dir, str(tmp_path))
    assert [r["id"] for r in scored] == [0]
    reasons = sorted(
        (json.loads(line)["row"]["id"], json.loads(line)["reason"]) for line in rejected
    )
    assert reasons == [(row["id"], reason) for row, reason in bad]


def test_model_handler_gives_the_fit_assignments(fitted, tmp_path):
    out, _, rows, assigned, _ = fitted
    directory = str(tmp_path / "inference")
    with BeamTestPipeline(runner="DirectRunner") as p:
        results = (
            p
            | beam.Create(rows[:400])
            | RunInference(KMeansModelHandler(out, max_batch_size=64))
            | beam.Map(lambda r: (r.example["id"], r.inference["cluster_id"]))
        )
        _keep(results, directory, "KeepResults")
    got = dict(_kept(directory))
    assert got == {r["id"]: assigned[r["id"]] for r in rows[:400]}
