"""The library transforms take the same element kinds (dict rows, beam.Rows, NumPy
arrays, record batches), and a row they cannot use goes to `rejected` with its reason."""

import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import AssignClusters, KMeans

BAD = [
    ({"a": 1.0}, "feature 'b' is missing"),
    ({"a": 1.0, "b": None}, "feature 'b' is null"),
    ({"a": "x", "b": 1.0}, "feature 'a' is not a number: 'x'"),
    ({"a": float("nan"), "b": 1.0}, "feature 'a' is NaN or infinite"),
]


def _elements():
    """60 rows around (0, 0) and 60 around (20, 20), as dicts, beam.Rows and arrays."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(20, 1, (60, 2))])
    dicts = [{"a": float(a), "b": float(b)} for a, b in x[:40]]
    rows = [beam.Row(a=float(a), b=float(b)) for a, b in x[40:80]]
    return dicts + rows + [x[80:100], x[100:]], x


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("library") / "fit")
    elements, _ = _elements()
    with BeamTestPipeline(runner="DirectRunner") as p:
        fitted = (
            p
            | beam.Create(elements + [row for row, _ in BAD])
            | KMeans(k=2, features=["a", "b"], output_dir=out, max_rounds=10, seed=3)
        )
        sizes = fitted["final"] | beam.Map(lambda part: sorted(part.counts.tolist()))
        assert_that(sizes, equal_to([[60, 60]]), label="Sizes")
        reasons = fitted["rejected"] | beam.Map(lambda line: json.loads(line)["reason"])
        assert_that(reasons, equal_to([reason for _, reason in BAD]), label="Rejected")
        # The centroids in both spaces: the blobs' means in the input's units.
        original = fitted["centroids"] | beam.Map(
            lambda c: (c.features, sorted(np.round(c.original.mean(axis=1)).tolist()))
        )
        assert_that(original, equal_to([(["a", "b"], [0.0, 20.0])]), label="Original")
        standardized = fitted["centroids"] | beam.Map(
            lambda c: sorted(np.round(c.standardized.mean(axis=1), 1).tolist())
        )
        assert_that(standardized, equal_to([[-1.0, 1.0]]), label="Standardized")
    return out


def test_assign_clusters_takes_what_kmeans_takes_and_rejects_bad_rows(model):
    elements, x = _elements()
    with BeamTestPipeline(runner="DirectRunner") as p:
        out = (
            p
            | beam.Create(elements + [row for row, _ in BAD])
            | AssignClusters(model, rejected=True)
        )
        clusters = out["scored"] | beam.Map(
            lambda r: (
                round(r["a"], 6) if "a" in r else round(r["features"][0], 6),
                r["cluster_id"],
            )
        )
        # the two blobs, whatever their ids: 60 rows in each
        counts = clusters | beam.Map(lambda pair: pair[1]) | beam.combiners.Count.PerElement()
        assert_that(
            counts | beam.Map(lambda kv: kv[1]), equal_to([60, 60]), label="ScoredPerCluster"
        )
        reasons = out["rejected"] | beam.Map(lambda line: json.loads(line)["reason"])
        assert_that(reasons, equal_to([reason for _, reason in BAD]), label="Rejected")


def test_without_a_dead_letter_a_bad_row_is_an_error_naming_it(model):
    with (
        pytest.raises(Exception, match="cannot score row .*feature 'b' is null"),
        BeamTestPipeline(runner="DirectRunner") as p,
    ):
        _ = p | beam.Create([{"a": 1.0, "b": None}]) | AssignClusters(model)


def test_kmeans_removes_only_what_it_wrote_in_a_callers_work_dir(tmp_path):
    """A `work_dir` the caller keeps other files in: the fit's shards and tf.Transform's
    temporary files go, the caller's files stay."""
    work = tmp_path / "work"
    (work / "shards").mkdir(parents=True)
    mine = [work / "notes.txt", work / "shards" / "rows-theirs.arrow"]
    for path in mine:
        path.write_text("the caller's")
    elements, _ = _elements()
    with BeamTestPipeline(runner="DirectRunner") as p:
        _ = (
            p
            | beam.Create(elements)
            | KMeans(k=2, features=["a", "b"], output_dir=str(tmp_path / "fit"), work_dir=str(work))
        )
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == [
        "notes.txt",
        "shards",
        "shards/rows-theirs.arrow",
    ]
    assert all(path.read_text() == "the caller's" for path in mine)


def test_one_pipeline_fits_and_scores_with_the_model_as_a_side_input(tmp_path):
    """AssignClusters(fitted["model"]): the model KMeans writes in the same pipeline
    scores the rows: each blob in one cluster, the two blobs in two."""
    _, x = _elements()
    rows = [{"i": i, "a": float(a), "b": float(b)} for i, (a, b) in enumerate(x)]
    with BeamTestPipeline(runner="DirectRunner") as p:
        rows = p | beam.Create(rows)
        fitted = rows | KMeans(
            k=2, features=["a", "b"], output_dir=str(tmp_path / "fit"), max_rounds=10, seed=3
        )
        scored = rows | AssignClusters(fitted["model"])
        pairs = scored | beam.Map(lambda r: (r["i"] < 60, r["cluster_id"])) | beam.Distinct()
        assert_that(
            pairs | "CountPairs" >> beam.combiners.Count.Globally(), equal_to([2]), label="Two"
        )
        assert_that(
            scored | "CountRows" >> beam.combiners.Count.Globally(), equal_to([120]), label="All"
        )
