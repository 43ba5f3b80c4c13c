"""The model where it is served: TF Serving's layout, `score --model` in every form,
tf.Example with int64_list, Beam's RunInference (our handler, and Beam's stock one)."""

import json
import os
import shutil
import sys

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelMetadata,
    RunInference,
)
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from pipeline.cli import main
from transforms import KMeansModelHandler, export_model

from helpers import (
    ROOT,
    assignments,
    features_of,
    fit,
    run_check,
    scaled_blobs,
    tf_example,
    write_shards,
)

FEATURES = ["f0", "f1", "f2"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(fit output, raw rows float64 [n, 3], input pattern): K=3 merged to 2 groups."""
    base = tmp_path_factory.mktemp("serving")
    table = scaled_blobs(900, 3, 3, seed=5)
    pattern = write_shards(table, base / "in", "parquet", shards=2)
    out = base / "out"
    args = ("--k", 3, "--n_init", 1, "--init_refine_rounds", 0, "--max_rounds", 3)
    args += ("--contamination", 0.05)  # every output: normalized_distance and is_anomaly too
    assert fit(out, "--input", pattern, "--id_column", "id", "--merge_to", 2, *args) == 0
    return out, features_of(table), pattern


def _outputs(model_dir, x) -> dict:
    """The SavedModel's own outputs for float64 rows x, as NumPy arrays."""
    model = tf.saved_model.load(str(model_dir))
    return {k: v.numpy() for k, v in model(tf.constant(x, tf.float64)).items()}


def _reversed_model(fit_output, directory) -> str:
    """A second model of the same features: the centroids in reverse order, so its
    cluster_id is K - 1 - the fit's. Written as version 1 under `directory`."""
    import tensorflow_transform as tft

    centroids = np.load(os.path.join(fit_output, "centroids.npy"))
    version_dir = os.path.join(directory, "1")
    export_model(
        version_dir,
        tft.TFTransformOutput(str(fit_output / "transform_fn")).transform_savedmodel_dir,
        centroids[::-1].copy(),
        FEATURES,
    )
    return version_dir


def test_the_fit_writes_tf_serving_layout(fitted):
    out = fitted[0]
    assert os.listdir(out / "model") == ["1"]
    version = out / "model" / "1"
    assert {"saved_model.pb", "variables", "config.json", "model.weights.h5"} <= set(
        os.listdir(version)
    )
    success = json.loads((out / "_SUCCESS").read_text())
    published = {f["path"] for f in success["files"]}
    assert {"model/1/saved_model.pb", "model/1/variables/variables.index"} <= published
    model = tf.saved_model.load(str(version))
    assert set(model.signatures) == {"serving_default", "predict_raw"}
    assert [f.decode() for f in model.feature_names.numpy()] == FEATURES


def test_score_takes_a_version_directory(fitted, tmp_path):
    """The other forms of --model: a fit output (tests/integration/test_model.py), a base
    path (below, and tests/integration/test_output_safety.py); which SavedModel each form
    names is tests/unit/test_model_paths.py."""
    out, _, pattern = fitted
    argv = ["score", "--model", str(out / "model" / "1"), "--input", pattern, "--id_column", "id"]
    assert main([*argv, "--output", str(tmp_path / "scored")]) == 0
    ours, theirs = assignments(tmp_path / "scored"), assignments(out)
    np.testing.assert_array_equal(ours.column("cluster_id"), theirs.column("cluster_id"))
    scored = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert scored["model"] == str(out / "model" / "1")


def test_score_serves_the_highest_version_of_a_copied_base(fitted, tmp_path):
    """A base path copied elsewhere, with versions 1 (the fit) and 2 (another model):
    version 2 scores, as TF Serving would serve it; an output inside the base is refused."""
    out, _, pattern = fitted
    base = tmp_path / "served"
    shutil.copytree(out / "model", base)
    _reversed_model(out, base / "tmp")
    os.rename(base / "tmp" / "1", base / "2")
    os.rmdir(base / "tmp")

    argv = ["score", "--model", str(base), "--input", pattern, "--id_column", "id"]
    assert main([*argv, "--output", str(tmp_path / "scored")]) == 0
    ours, theirs = assignments(tmp_path / "scored"), assignments(out)
    np.testing.assert_array_equal(
        ours.column("cluster_id").to_numpy(), 2 - theirs.column("cluster_id").to_numpy()
    )
    assert json.loads((tmp_path / "scored" / "metrics.json").read_text())["model"] == str(
        base / "2"
    )
    assert main([*argv, "--output", str(base / "3")]) == 2  # would be a version TF Serving loads
    assert not (base / "3").exists()


def test_serving_default_takes_int64_list_features(fitted):
    """Whole numbers stored as int64_list, alone or beside float_list features, give what
    predict_raw gives for the same values; a feature without exactly one number is named."""
    out, x, _ = fitted
    model = tf.saved_model.load(str(out / "model" / "1"))
    rows = np.round(x[:40])  # whole numbers: exact in both encodings
    ints = [tf_example(**{f: [int(v)] for f, v in zip(FEATURES, row)}) for row in rows]
    mixed = [
        tf_example(f0=[int(row[0])], f1=[float(row[1])], f2=[int(row[2])], extra=[b"x"])
        for row in rows
    ]
    raw = model.signatures["predict_raw"](
        **{f: tf.constant(rows[:, j], tf.float32) for j, f in enumerate(FEATURES)}
    )
    for examples in (ints, mixed):
        served = model.signatures["serving_default"](examples=tf.constant(examples))
        np.testing.assert_array_equal(served["cluster_id"], raw["cluster_id"])
        np.testing.assert_array_equal(served["merged_cluster_id"], raw["merged_cluster_id"])
        np.testing.assert_allclose(served["distance"], raw["distance"], rtol=1e-6)

    empty = model.signatures["serving_default"](examples=tf.constant([], tf.string))
    assert empty["cluster_id"].shape == (0,)
    for bad in (
        tf_example(f0=[1], f1=[2]),  # f2 missing
        tf_example(f0=[1], f1=[2, 3], f2=[4]),  # two values
        tf_example(f0=[1], f1=[b"2"], f2=[4]),  # bytes
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match="feature f[12] must hold"):
            model.signatures["serving_default"](examples=tf.constant([ints[0], bad]))


def test_model_handler_scores_dicts_rows_and_arrays(fitted):
    out, x, _ = fitted
    expected = _outputs(out / "model" / "1", x[:30])
    version = str(out / "model" / "1")

    def want(i):
        return {name: values[i].tolist() for name, values in expected.items()}

    dicts = [{"id": i, **dict(zip(FEATURES, row))} for i, row in enumerate(x[:10])]
    rows = [beam.Row(id=i, **dict(zip(FEATURES, row))) for i, row in enumerate(x[10:20], 10)]
    arrays = [(i, row) for i, row in enumerate(x[20:30], 20)]
    with BeamTestPipeline(runner="FnApiRunner") as p:
        plain = (
            p
            | "Plain" >> beam.Create(dicts + rows)
            | "Score" >> RunInference(KMeansModelHandler(str(out), max_batch_size=7))
            | "ById"
            >> beam.Map(
                lambda r: (
                    r.example["id"] if isinstance(r.example, dict) else r.example.id,
                    r.inference,
                    r.model_id,
                )
            )
        )
        assert_that(plain, equal_to([(i, want(i), version) for i in range(20)]), label="Plain")
        keyed = (
            p
            | "Keyed" >> beam.Create(arrays)
            | "ScoreKeyed"
            >> RunInference(KeyedModelHandler(KMeansModelHandler(str(out / "model"))))
            | "Key" >> beam.MapTuple(lambda key, r: (key, r.inference))
        )
        assert_that(keyed, equal_to([(i, want(i)) for i in range(20, 30)]), label="Keyed")
    assert set(want(0)) == {
        "cluster_id",
        "distance",
        "normalized_distance",
        "merged_cluster_id",
        "is_anomaly",
        "nearest_cluster_ids",
        "nearest_distances",
    }
    assert isinstance(want(0)["cluster_id"], int) and isinstance(want(0)["distance"], float)


def test_model_handler_with_the_model_in_another_process(fitted):
    """large_model=True: RunInference holds a proxy of the model, served by another
    process, which passes method calls only."""
    out, x, _ = fitted
    expected = _outputs(out / "model" / "1", x[:3])["cluster_id"]
    with BeamTestPipeline(runner="FnApiRunner") as p:
        ids = (
            p
            | beam.Create([(i, x[i]) for i in range(3)])
            | RunInference(KeyedModelHandler(KMeansModelHandler(str(out), large_model=True)))
            | beam.MapTuple(lambda i, r: (i, r.inference["cluster_id"]))
        )
        assert_that(ids, equal_to([(i, int(c)) for i, c in enumerate(expected)]))


def test_model_handler_refuses_what_it_cannot_score(fitted):
    out, x, _ = fitted
    handler = KMeansModelHandler(str(out))
    model = handler.load_model()
    for batch, error in (
        ([{"f0": 1.0, "f1": 2.0}], "cannot score row .*feature 'f2' is missing"),
        ([np.zeros(4)], "shape \\(3,\\)"),
        ([[1.0, 2.0, 3.0]], "dict rows, beam.Rows or NumPy arrays"),
    ):
        with pytest.raises((ValueError, TypeError), match=error):
            handler.run_inference(batch, model)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        handler.run_inference([np.array([1.0, np.nan, 2.0])], model)
    assert handler.run_inference([], model) == []
    with pytest.raises(ValueError, match="no inference_args"):
        handler.validate_inference_args({"k": 1})


def test_model_handler_swaps_models_from_a_side_input(fitted, tmp_path):
    """RunInference with a side input of ModelMetadata, windowed: the rows of the first
    window ("": no new model) are scored by the handler's own model, those after the
    swap by the new one (a base path, resolved to its version), each result naming its
    model, whatever order the runner processes the windows' batches in."""
    out, x, _ = fitted
    new_base = tmp_path / "new" / "model"
    new_version = _reversed_model(out, new_base)
    first = _outputs(out / "model" / "1", x[:8])["cluster_id"]
    t0, width = 1_000_000, 10
    rows = [(t0 + (0 if i < 4 else width) + i, i) for i in range(8)]
    swaps = [
        (t0, ModelMetadata(model_id="", model_name="")),  # "": keep the handler's model
        (t0 + width, ModelMetadata(model_id=str(new_base), model_name="new")),
    ]

    def windowed(pcoll, label):
        return (
            pcoll
            | f"{label}Stamp" >> beam.MapTuple(lambda ts, v: window.TimestampedValue(v, ts))
            | f"{label}Window" >> beam.WindowInto(window.FixedWindows(width))
        )

    with BeamTestPipeline(runner="FnApiRunner") as p:
        # Beam's own test of this pattern: side input semantics vary across runners, and
        # the FnApiRunner gives each window the side input of its own window.
        side = windowed(p | "Swaps" >> beam.Create(swaps), "Side") | "Metadata" >> beam.Map(
            lambda m: m
        )
        results = (
            windowed(p | "Rows" >> beam.Create(rows), "Main")
            | "Dicts" >> beam.Map(lambda i: {"i": i, **dict(zip(FEATURES, x[i].tolist()))})
            | RunInference(KMeansModelHandler(str(out)), model_metadata_pcoll=side)
            | beam.Map(lambda r: (r.example["i"], r.inference["cluster_id"], r.model_id))
        )
        expected = [
            (i, int(first[i]) if i < 4 else 2 - int(first[i]), version)
            for i, version in [(i, str(out / "model" / "1")) for i in range(4)]
            + [(i, new_version) for i in range(4, 8)]
        ]
        assert_that(results, equal_to(expected))


def test_model_handler_swaps_models_mid_stream(fitted, tmp_path):
    """A streaming pipeline (TestStream, DirectRunner): rows and ModelMetadata arrive in
    fixed windows; after the watermark passes the first window, a new model (by its
    fit-output-like directory) scores the rows that follow."""
    out, x, _ = fitted
    new_version = _reversed_model(out, tmp_path / "new" / "model")
    first = _outputs(out / "model" / "1", x[:8])["cluster_id"]
    t0, width = 1_000_000, 10

    def rows(indices, start):
        return [
            window.TimestampedValue({"i": i, **dict(zip(FEATURES, x[i].tolist()))}, start + i)
            for i in indices
        ]

    def metadata(model_id, at):
        return [window.TimestampedValue(ModelMetadata(model_id, model_id), at)]

    events = TestStream(output_tags=["rows", "models"])
    for tag in ("rows", "models"):
        events = events.advance_watermark_to(t0, tag=tag)
    events = events.add_elements(metadata("", t0), tag="models")
    events = events.add_elements(rows(range(4), t0), tag="rows")
    for tag in ("models", "rows"):
        events = events.advance_watermark_to(t0 + width, tag=tag)
    events = events.add_elements(metadata(str(tmp_path / "new"), t0 + width), tag="models")
    events = events.add_elements(rows(range(4, 8), t0 + width), tag="rows")
    for tag in ("rows", "models"):
        events = events.advance_watermark_to_infinity(tag=tag)

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with BeamTestPipeline(runner="DirectRunner", options=options) as p:
        streams = p | events
        models = streams["models"] | "ModelWindows" >> beam.WindowInto(window.FixedWindows(width))
        results = (
            streams["rows"]
            | "RowWindows" >> beam.WindowInto(window.FixedWindows(width))
            | RunInference(KMeansModelHandler(str(out)), model_metadata_pcoll=models)
            | beam.Map(lambda r: (r.example["i"], r.inference["cluster_id"], r.model_id))
        )
        expected = [(i, int(first[i]), str(out / "model" / "1")) for i in range(4)]
        expected += [(i, 2 - int(first[i]), new_version) for i in range(4, 8)]
        assert_that(results, equal_to(expected))


@pytest.mark.parametrize("keras", ["keras3", "tf_keras"])
def test_stock_tf_model_handler_loads_the_model(fitted, keras):
    """Beam's TFModelHandlerTensor, defaults only, in a process with no environment
    variable set: under Keras 3 (a fresh process) and under tf-keras (after tf.Transform,
    which sets TF_USE_LEGACY_KERAS, is imported)."""
    out, x, _ = fitted
    rows = os.path.join(out.parent, f"rows-{keras}.npy")
    np.save(rows, x[:25])
    env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"}
    env["HOME"] = os.environ.get("HOME", ROOT)
    done = run_check("stock_tf_handler", out / "model" / "1", rows, keras, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "ok", done.stdout


def test_assign_clusters_takes_a_fit_output(fitted):
    out, x, _ = fitted
    from transforms import AssignClusters

    expected = _outputs(out / "model" / "1", x[:5])["cluster_id"]
    rows = [{"i": i, **dict(zip(FEATURES, row))} for i, row in enumerate(x[:5])]
    with BeamTestPipeline(runner="FnApiRunner") as p:
        ids = (
            p
            | beam.Create(rows)
            | AssignClusters(str(out))
            | beam.Map(lambda r: (r["i"], r["cluster_id"]))
        )
        assert_that(ids, equal_to([(i, int(c)) for i, c in enumerate(expected)]))
