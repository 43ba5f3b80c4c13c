"""The rejected rows' summary by reason and by file (pipeline.io.ingest.RejectionSummary),
and metrics.json's rejected_by_reason / rejected_by_file (#23)."""

import json

import numpy as np
import pyarrow as pa
import pytest

from pipeline.io import ingest
from pipeline.io.ingest import OTHER, ReadValidRows, RejectionSummary, reason_key
from pipeline.outputs import metrics


@pytest.mark.parametrize(
    "column,reason,key",
    [
        ("a", "non-numeric value 'oops'", "a: non-numeric value"),
        ("a", "non-numeric value 'x\ny'", "a: non-numeric value"),
        ("b", "3 values where one is expected", "b: several values where one is expected"),
        (
            "id",
            "value does not fit type int64: Integer value 1e30 ...",
            "id: value does not fit type int64",
        ),
        ("a", "missing value", "a: missing value"),
        (None, "expected 3 fields, found 2", "expected 3 fields, found 2"),
        ("c", "x" * 500, "c: " + "x" * (ingest.MAX_REASON_CHARS - 3)),
    ],
)
def test_reason_key(column, reason, key):
    assert reason_key(column, reason) == key


def _summary(files, by_reason, by_file):
    return {"files": files, "by_reason": by_reason, "by_file": by_file}


def test_summary_merges_and_stays_bounded(monkeypatch):
    """However the per-file summaries are grouped, the totals are the rows rejected and the
    named keys at most MAX_SUMMARY_KEYS (the rest in OTHER)."""
    monkeypatch.setattr(ingest, "MAX_SUMMARY_KEYS", 5)
    rng = np.random.default_rng(0)
    inputs = []
    for i in range(40):
        n = int(rng.integers(0, 20))
        reasons = {}
        for _ in range(n):
            key = f"f{rng.integers(0, 12)}: missing value"
            reasons[key] = reasons.get(key, 0) + 1
        inputs.append(_summary(1, reasons, {f"/d/{i}.csv": n} if n else {}))
    total = sum(sum(s["by_reason"].values()) for s in inputs)
    fn = RejectionSummary()
    for split in (1, 3, 7):
        parts = []
        for chunk in np.array_split(np.arange(len(inputs)), split):
            acc = fn.create_accumulator()
            for i in chunk:
                acc = fn.add_input(acc, inputs[i])
            parts.append(acc)
        out = fn.extract_output(fn.merge_accumulators(parts))
        assert out["files"] == 40
        for key in ("by_reason", "by_file"):
            assert sum(out[key].values()) == total
            assert len([k for k in out[key] if k != OTHER]) <= 5
    # Under the bound, exact.
    monkeypatch.setattr(ingest, "MAX_SUMMARY_KEYS", 1000)
    out = fn.merge_accumulators(inputs)
    assert OTHER not in out["by_reason"] and len(out["by_file"]) == sum(
        1 for s in inputs if s["by_file"]
    )


def test_rejection_metrics_top_and_other(monkeypatch):
    assert metrics.OTHER == OTHER
    monkeypatch.setattr(metrics, "TOP_REJECTED", 3)
    summary = _summary(9, {"a": 5, "b": 9, "c": 1, "d": 5, OTHER: 2}, {"/x.csv": 20, "/y.csv": 2})
    m = metrics.rejection_metrics(summary)
    assert list(m["rejected_by_reason"].items()) == [("b", 9), ("a", 5), ("d", 5), (OTHER, 3)]
    assert m["rejected_by_file"] == {"/x.csv": 20, "/y.csv": 2}
    assert metrics.rejection_metrics(_summary(1, {}, {})) == {
        "rejected_by_reason": {},
        "rejected_by_file": {},
    }


def test_read_valid_rows_summarises_the_rejected_rows(tmp_path):
    """The summary of a small corpus: by reason and by file, each adding up to the rows
    rejected; an empty file counts as a file read and adds no row."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.util import assert_that, equal_to

    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_text("id,a,b\n1,1,2\n2,x,2\n3,,2\n4,1,y\n5,1\n6,1,2\n")
    (d / "b.csv").write_text("id,a,b\n7,z,1\n8,1,2\n")
    (d / "c.csv").write_text("")  # empty: an unreadable file
    passthrough = pa.schema([("id", pa.string())])
    a, b = str(d / "a.csv"), str(d / "b.csv")
    expected = {
        "files": 3,
        "by_reason": {
            "a: non-numeric value": 2,
            "a: empty value": 1,
            "b: non-numeric value": 1,
            "expected 3 fields, found 2": 1,
        },
        "by_file": {a: 4, b: 1},
    }
    with beam.Pipeline(runner=fn_runner.FnApiRunner()) as p:
        rows = p | ReadValidRows(str(d / "*.csv"), "csv", ["a", "b"], passthrough)
        assert_that(
            rows["counts"] | beam.Map(lambda c: int(c[ingest.ROWS_REJECTED])),
            equal_to([5]),
            label="Counts",
        )
        assert_that(
            rows["rejections"] | beam.Map(lambda s: json.dumps(s, sort_keys=True)),
            equal_to([json.dumps(expected, sort_keys=True)]),
            label="Summary",
        )
