"""Streaming scoring's core, `ScoreMessages`, on the DirectRunner with a TestStream:
JSON messages in three windows, malformed ones, a late one and one past the allowed
lateness. The scored messages are the model's own outputs for their rows, the dead
letter holds each bad message with its reason, the window counts are the scored
rows' by cluster, and nothing is lost: scored + rejected == sent."""

import json
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from transforms import ScoreMessages
from transforms.beam.streaming import _ParseFn, event_time
from transforms.step.export import OUTPUT_ORDER

from helpers import features_of, fit, scaled_blobs, write_shards

FEATURES = ["f0", "f1", "f2"]
OUTPUT_ORDER_OF_THIS_MODEL = [
    name
    for name in OUTPUT_ORDER
    if name in ("cluster_id", "distance", "normalized_distance", "is_anomaly")
]
T0, WIDTH, LATENESS = 1_800_000_000, 10, 30  # seconds of event time


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(fit output, raw rows float64 [n, 3]): K=3, contamination 0.1 (is_anomaly too)."""
    base = tmp_path_factory.mktemp("streaming")
    table = scaled_blobs(600, 3, 3, seed=11)
    pattern = write_shards(table, base / "in", "parquet", shards=2)
    out = base / "out"
    args = ("--k", 3, "--n_init", 1, "--init_refine_rounds", 0, "--max_rounds", 3)
    assert fit(out, "--input", pattern, "--id_column", "id", "--contamination", 0.1, *args) == 0
    return out, features_of(table)


def _row(i: int, x: np.ndarray, at: int) -> dict:
    """Row i's message: its id, features, a note, and its event time `at` (seconds) as
    milliseconds since the epoch in the field "at"."""
    return {"id": i, **dict(zip(FEATURES, x[i].tolist())), "note": f"row {i}", "at": at * 1000}


# Bad messages: (data, the reason's start), each in the first or second window.
BAD = [
    (b'{"id": 900, "f0": 1.0,', "the message is not JSON"),
    (b"[1.0, 2.0, 3.0]", "the message is a JSON array, not an object"),
    (b'{"id": 901, "f0": 1.0, "f2": 3.0, "at": 1800000013000}', "feature 'f1' is missing"),
    (
        b'{"id": 902, "f0": 1.0, "f1": NaN, "f2": 3.0, "at": 1800000013000}',
        "feature 'f1' is NaN or infinite",
    ),
    (
        b'{"id": 903, "f0": "1.5", "f1": 2.0, "f2": 3.0, "at": 1800000013000}',
        "feature 'f0' is not a number: '1.5'",
    ),
    (b'{"id": 904, "f0": null, "f1": 2.0, "f2": 3.0, "at": 1800000013000}', "feature 'f0' is null"),
    (b'{"id": 906, "f0": 1.0, "f1": 2.0, "f2": 3.0}', "field 'at' is not an event time"),
]
BAD_WITH_ATTRIBUTES = b'{"id": 905, "f0": 1.0, "f1": 2.0, "f2": Infinity, "at": 1800000014000}'
ATTRIBUTES = {"source": "sensor-9"}


@pytest.fixture(scope="module")
def streamed(fitted, tmp_path_factory):
    """Run the TestStream once: (the sent rows {id: (the window of its event time, or
    None if too late to count; its event time)}, the outputs as lists of decoded JSON:
    scored, rejected, counts).

    Each message's event time is its field "at"; the element's own timestamp (the
    publish time Pub/Sub would give) is when it arrives: for the late ones, long after."""
    out, x = fitted
    kept = tmp_path_factory.mktemp("streamed")
    sent = {}

    def messages(ids, at, published=None, attributes=None, counted=True):
        """Rows `ids` with event time `at`, published at `published` (default `at`)."""
        elements = []
        for i in ids:
            data = json.dumps(_row(i, x, at)).encode()
            if attributes is not None:
                data = PubsubMessage(data, attributes)
            elements.append(window.TimestampedValue(data, published or at))
            sent[i] = ((at - T0) // WIDTH if counted else None, at)
        return elements

    events = TestStream().advance_watermark_to(T0)
    # window 0: rows 0..5 and two bad messages
    for i in range(6):
        events = events.add_elements(messages([i], T0 + i))
    events = events.add_elements([window.TimestampedValue(d, T0 + 1) for d, _ in BAD[:2]])
    events = events.advance_watermark_to(T0 + WIDTH)  # window 0 fires on time
    # window 1: rows 6..13 (two with attributes) and the other bad messages
    events = events.add_elements(messages(range(6, 12), T0 + WIDTH + 1))
    events = events.add_elements(messages([12, 13], T0 + WIDTH + 2, None, {"source": "s-7"}))
    events = events.add_elements([window.TimestampedValue(d, T0 + WIDTH + 3) for d, _ in BAD[2:]])
    # one bad message from Pub/Sub with its attributes: the dead letter keeps them
    events = events.add_elements(
        [window.TimestampedValue(PubsubMessage(BAD_WITH_ATTRIBUTES, ATTRIBUTES), T0 + WIDTH + 4)]
    )
    events = events.advance_watermark_to(T0 + 2 * WIDTH)  # window 1 fires on time
    # late for window 0, within the allowed lateness: counted, in a late pane
    events = events.add_elements(messages([14], T0 + 5, published=T0 + 2 * WIDTH))
    # window 2
    events = events.add_elements(messages([15], T0 + 2 * WIDTH + 1))
    # past window 0's allowed lateness: scored, not counted
    events = events.advance_watermark_to(T0 + WIDTH + LATENESS + 5)
    too_late = T0 + WIDTH + LATENESS + 5
    events = events.add_elements(messages([16], T0 + 3, published=too_late, counted=False))
    events = events.advance_watermark_to_infinity()

    def keep(name):
        # The runner calls a copy of this function: what it saw goes through a file.
        def check(actual):
            (kept / f"{name}.json").write_text(json.dumps([json.loads(m) for m in actual]))

        return check

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with BeamTestPipeline(runner="DirectRunner", options=options) as p:
        results = p | events | ScoreMessages(str(out), WIDTH, LATENESS, timestamp_field="at")
        for name in ("scored", "rejected", "counts"):
            assert_that(results[name], keep(name), label=f"Keep{name}")
    got = {name: json.loads((kept / f"{name}.json").read_text()) for name in results}
    return sent, got


def _model_outputs(out, x) -> dict:
    model = tf.saved_model.load(str(out / "model" / "1"))
    return {k: v.numpy() for k, v in model.assign_batch(x).items()}


def test_scored_messages_are_the_models_outputs(fitted, streamed):
    out, x = fitted
    sent, got = streamed
    scored = sorted(got["scored"], key=lambda m: m["id"])
    ids = [m["id"] for m in scored]
    assert ids == sorted(sent)
    want = _model_outputs(out, x[ids])
    assert set(want) == {"cluster_id", "distance", "normalized_distance", "is_anomaly"}
    for m, i in zip(scored, ids):  # the message's fields, unchanged, then the outputs
        assert list(m) == ["id", *FEATURES, "note", "at", *OUTPUT_ORDER_OF_THIS_MODEL]
        assert {k: m[k] for k in list(m)[:6]} == _row(i, x, sent[i][1])
    for name, values in want.items():
        got_values = [m[name] for m in scored]
        if values.dtype.kind == "f":
            np.testing.assert_allclose(got_values, values, rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got_values, values, err_msg=name)
    assert any(m["is_anomaly"] for m in scored) or not want["is_anomaly"].any()


def test_the_dead_letter_holds_each_bad_message_with_its_reason(streamed):
    rejected = streamed[1]["rejected"]
    assert len(rejected) == len(BAD) + 1
    by_message = {m["message"]: m for m in rejected}
    for data, reason in BAD:
        m = by_message[data.decode()]
        assert m["reason"].startswith(reason), (m["reason"], reason)
        assert m["attributes"] == {}
    m = by_message[BAD_WITH_ATTRIBUTES.decode()]
    assert (m["reason"], m["attributes"]) == ("feature 'f2' is NaN or infinite", ATTRIBUTES)


def test_window_counts_are_the_scored_rows_by_cluster(streamed):
    sent, got = streamed
    cluster = {m["id"]: m["cluster_id"] for m in got["scored"]}
    anomaly = {m["id"]: m["is_anomaly"] for m in got["scored"]}

    def expected(ids):
        rows = Counter(cluster[i] for i in ids)
        flagged = Counter(cluster[i] for i in ids if anomaly[i])
        return {c: (rows[c], flagged[c]) for c in rows}

    panes = {}
    for m in got["counts"]:
        start = Timestamp.from_rfc3339(m["window_start"])
        assert Timestamp.from_rfc3339(m["window_end"]) - start == WIDTH
        w = int((start.micros // 1_000_000 - T0) // WIDTH)
        panes.setdefault((w, m["timing"]), {})[m["cluster_id"]] = (m["rows"], m["anomalies"])
    on_time = {w: [i for i, v in sent.items() if v[0] == w and i != 14] for w in (0, 1, 2)}
    assert panes[(0, "on_time")] == expected(on_time[0])
    assert panes[(1, "on_time")] == expected(on_time[1])
    assert panes[(2, "on_time")] == expected(on_time[2])
    # The late message fires its cluster's count again, accumulated; the one past the
    # allowed lateness changes nothing.
    late_cluster = cluster[14]
    assert panes[(0, "late")] == {late_cluster: expected(on_time[0] + [14])[late_cluster]}
    assert set(panes) == {(0, "on_time"), (1, "on_time"), (2, "on_time"), (0, "late")}


def test_nothing_is_lost(streamed):
    sent, got = streamed
    assert len(got["scored"]) + len(got["rejected"]) == len(sent) + len(BAD) + 1
    assert sorted(m["id"] for m in got["scored"]) == sorted(sent)


def test_event_times_from_a_field_and_messages_parse_cannot_read():
    """`timestamp_field`: milliseconds since the epoch or RFC 3339 set the element's
    time; a message without a readable one, or holding the reserved field, is rejected."""
    assert event_time(1_800_000_000_123) == Timestamp(1_800_000_000.123)
    assert event_time("2027-01-15T08:00:10Z") == Timestamp(T0 + WIDTH)
    assert event_time("2027-01-15T09:00:10+01:00") == Timestamp(T0 + WIDTH)
    parse = _ParseFn("at")
    (row,) = parse.process(b'{"f0": 1, "at": "2027-01-15T08:00:10Z"}')
    assert (row.value["f0"], row.timestamp) == (1, Timestamp(T0 + WIDTH))
    for data, reason in (
        (b'{"f0": 1}', "field 'at' is not an event time: None is neither"),
        (b'{"f0": 1, "at": "yesterday"}', "field 'at' is not an event time: Could not parse"),
        (b'{"f0": 1, "at": true}', "field 'at' is not an event time: True is neither"),
        (b'{"__shardmeans_message__": 1}', "the field '__shardmeans_message__' is reserved"),
        (b"\xff\xfe{}", "the message is not JSON"),
        (b'"a text"', "the message is a JSON string, not an object"),
        (b'{"f0": 1' + b"0" * 400 + b"}", "field 'f0' is a number beyond float64's range"),
        (b'{"f0": 1' + b"0" * 5000 + b"}", "the message is not JSON: Exceeds the limit"),
        (b"[" * 100_000 + b"]" * 100_000, "the message is not JSON: maximum recursion"),
        (b"null", "the message is a JSON null, not an object"),
    ):
        (out,) = parse.process(data)
        assert out.tag == "rejected"
        assert json.loads(out.value)["reason"].startswith(reason), (data, out.value)


def test_in_a_batch_pipeline_and_its_metrics(fitted):
    """The same transform in a batch pipeline (messages from a file, say): the scored
    messages and the Beam counters of scored and rejected messages. (The DirectRunner's
    streaming mode keeps only the last bundle's count of a counter, so they are read
    here.)"""
    out, x = fitted
    messages = [json.dumps(_row(i, x, T0)).encode() for i in range(7)] + [BAD[0][0], BAD[3][0]]
    with BeamTestPipeline(runner="FnApiRunner") as p:
        results = p | beam.Create(messages) | ScoreMessages(str(out), timestamp_field="at")
        ids = results["scored"] | beam.Map(lambda m: json.loads(m)["id"])
        assert_that(ids, equal_to(list(range(7))), label="Scored")
    counters = p.result.metrics().query(MetricsFilter().with_namespace("shardmeans"))["counters"]
    totals = Counter()
    for c in counters:  # one for each step that counts
        totals[c.key.metric.name] += c.committed
    assert totals == {"messages_scored": 7, "messages_rejected": 2}
