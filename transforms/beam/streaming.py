"""The `ScoreMessages` PTransform: JSON messages, as Pub/Sub delivers them, -> scored
messages, a dead letter, and each window's counts by cluster.

    read = beam.io.ReadFromPubSub(subscription=SUB, with_attributes=True)
    results = p | read | ScoreMessages("gs://bucket/fit-output", window_s=60)
    results["scored"] | "Scored" >> beam.io.WriteToPubSub(SCORED_TOPIC)
    results["rejected"] | "DeadLetter" >> beam.io.WriteToPubSub(DEAD_LETTER_TOPIC)
    results["counts"] | "Counts" >> beam.io.WriteToPubSub(COUNTS_TOPIC)

Every message is scored or rejected, never dropped: a message the watermark has
passed by more than the allowed lateness is still scored, only left out of the
counts (Beam drops it where the counts are grouped). The rows are scored by
`AssignClusters` (its validation of the features, its per-row outputs, all of
them: a field a newer model outputs reaches the scored messages unnamed here).
"""

import json
import math
import numbers
import sys
from typing import Optional

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms.beam.assign import AssignClusters
from transforms.step.export import CLUSTER_ID, IS_ANOMALY, OUTPUT_ORDER

# The field that carries a row's message through AssignClusters to the dead letter: its
# raw text and attributes (a message holding this field is rejected).
_MESSAGE = "__shardmeans_message__"

# Messages and counts out of the transform are UTF-8 JSON, as WriteToPubSub takes them.
_ENCODING = "utf-8"


# Beam metrics of the job (Dataflow's console shows them as the job runs).
_SCORED = Metrics.counter("shardmeans", "messages_scored")
_REJECTED = Metrics.counter("shardmeans", "messages_rejected")


def _json_value(value):
    """json.dumps' fallback: NumPy arrays and scalars as lists and Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON serializable")


def _text(data: bytes) -> str:
    return data.decode(_ENCODING, errors="backslashreplace")


def dead_letter(reason: str, data, attributes: Optional[dict]) -> bytes:
    """A rejected message: UTF-8 JSON {"reason": why, "message": its data as text
    (bytes that are not UTF-8 as backslash escapes), "attributes": {str: str}}."""
    _REJECTED.inc()
    if isinstance(data, bytes):
        data = _text(data)
    return json.dumps(
        {"reason": reason, "message": data, "attributes": dict(attributes or {})}
    ).encode(_ENCODING)


def event_time(value) -> Timestamp:
    """A message field's event time: milliseconds since the Unix epoch (a number, as
    Pub/Sub's timestamp attributes hold them) or an RFC 3339 text; else ValueError."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a time")
        return Timestamp(micros=round(value * 1000))
    if isinstance(value, str):
        return Timestamp.from_rfc3339(value)
    raise ValueError(f"{value!r} is neither milliseconds since the epoch nor an RFC 3339 text")


_FLOAT64_MAX = sys.float_info.max

# What json.loads gives for each JSON value that is not an object.
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
_JSON_TYPES[type(None)] = "null"


class _ParseFn(beam.DoFn):
    """A message (bytes, str, or a PubsubMessage with `data` and `attributes`) -> its JSON
    object as a dict row, carrying the message under `_MESSAGE`, at its event time
    (`timestamp_field`'s value, else the element's own: Pub/Sub's publish time or its
    timestamp attribute); a message that is no JSON object, or whose event time cannot
    be read, tagged "rejected" as a `dead_letter`."""

    def __init__(self, timestamp_field: Optional[str]):
        self._timestamp_field = timestamp_field

    def process(self, message):
        data, attributes = message, {}
        if hasattr(message, "data") and hasattr(message, "attributes"):
            data, attributes = message.data or b"", dict(message.attributes or {})
        try:
            text = data.decode(_ENCODING) if isinstance(data, bytes) else data
            row = json.loads(text)
        # (also what json refuses beyond JSON: an integer of too many digits, nesting
        # too deep): an exception here would fail the bundle again on every retry
        except (ValueError, TypeError, RecursionError) as e:
            reason = f"the message is not JSON: {e}"
            yield beam.pvalue.TaggedOutput("rejected", dead_letter(reason, data, attributes))
            return
        if not isinstance(row, dict):
            reason = f"the message is a JSON {_JSON_TYPES[type(row)]}, not an object"
            yield beam.pvalue.TaggedOutput("rejected", dead_letter(reason, data, attributes))
            return
        if _MESSAGE in row:
            reason = f"the field {_MESSAGE!r} is reserved"
            yield beam.pvalue.TaggedOutput("rejected", dead_letter(reason, data, attributes))
            return
        huge = [k for k, v in row.items() if isinstance(v, int) and abs(v) > _FLOAT64_MAX]
        if huge:  # AssignClusters' float64 conversion would raise on it, on every retry
            reason = f"field {huge[0]!r} is a number beyond float64's range"
            yield beam.pvalue.TaggedOutput("rejected", dead_letter(reason, data, attributes))
            return
        row[_MESSAGE] = {"message": text, "attributes": attributes}
        if self._timestamp_field is None:
            yield row
            return
        try:
            at = event_time(row.get(self._timestamp_field))
        except (ValueError, OverflowError) as e:
            reason = f"field {self._timestamp_field!r} is not an event time: {e}"
            yield beam.pvalue.TaggedOutput("rejected", dead_letter(reason, data, attributes))
            return
        yield window.TimestampedValue(row, at)


def _scored_message(row: dict) -> bytes:
    """A scored row -> UTF-8 JSON: the message's fields, then the per-row outputs (those
    `OUTPUT_ORDER` names last, in its order)."""
    last = [name for name in OUTPUT_ORDER if name in row]
    fields = {k: v for k, v in row.items() if k != _MESSAGE and k not in OUTPUT_ORDER}
    _SCORED.inc()
    ordered = {**fields, **{name: row[name] for name in last}}
    return json.dumps(ordered, default=_json_value).encode(_ENCODING)


def _rejected_message(line: str) -> bytes:
    """AssignClusters' rejection {"reason", "row"} -> the `dead_letter` of the row's message."""
    rejection = json.loads(line)
    message = rejection["row"][_MESSAGE]
    return dead_letter(rejection["reason"], message["message"], message["attributes"])


def _cluster_and_flag(row: dict):
    """(cluster_id, (1, 1 if an anomaly else 0, whether the row is flagged at all))."""
    flagged = IS_ANOMALY in row
    return row[CLUSTER_ID], (1, int(bool(row.get(IS_ANOMALY))), flagged)


def _sum_counts(values) -> tuple:
    """Sum the (rows, anomalies, flagged) triples of one cluster in one window."""
    rows = anomalies = 0
    flagged = False
    for n, a, f in values:
        rows, anomalies, flagged = rows + n, anomalies + a, flagged or f
    return rows, anomalies, flagged


_TIMINGS = {
    PaneInfoTiming.EARLY: "early",
    PaneInfoTiming.ON_TIME: "on_time",
    PaneInfoTiming.LATE: "late",
}


class _FormatCountsFn(beam.DoFn):
    """(cluster_id, (rows, anomalies, flagged)) of one pane of a window -> UTF-8 JSON
    {"window_start", "window_end" (RFC 3339, UTC), "cluster_id", "rows", "anomalies"
    (null when the model flags no anomalies), "timing" ("on_time" or "late"), "pane"
    (0, 1, ...: each firing of the window; a later pane's counts include the earlier's)}."""

    def process(self, element, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        cluster, (rows, anomalies, flagged) = element
        timing = _TIMINGS.get(pane.timing, "unknown")
        yield json.dumps(
            {
                "window_start": w.start.to_rfc3339(),
                "window_end": w.end.to_rfc3339(),
                CLUSTER_ID: cluster,
                "rows": rows,
                "anomalies": anomalies if flagged else None,
                "timing": timing,
                "pane": pane.index,
            }
        ).encode(_ENCODING)


class ScoreMessages(beam.PTransform):
    """JSON messages -> {"scored", "rejected", "counts"}, each a PCollection of UTF-8 JSON
    bytes (what `WriteToPubSub` publishes).

    In: bytes, str, or Pub/Sub messages (`ReadFromPubSub(with_attributes=True)`), each
    one JSON object holding every feature of the model (other fields pass through).
    - "scored": each valid message's fields, then the per-row outputs of
      `AssignClusters` (cluster_id, distance, normalized_distance, is_anomaly when the
      model or `contamination` flags anomalies, ...);
    - "rejected": each message that cannot be scored, {"reason", "message" (its data as
      text), "attributes"}: not JSON, not an object, a feature missing, null, not a
      number, NaN or infinite, an unreadable event time;
    - "counts": per window of `window_s` seconds of event time and per cluster, the rows
      and anomalies scored (`_FormatCountsFn`). A window's counts are published when the
      watermark passes its end ("on_time"), then again, accumulated, for each message
      that arrives late, up to `allowed_lateness_s` after its end ("late"); a message
      later still is scored but left out of the counts.

    Event time: `timestamp_field`'s value in the message (milliseconds since the epoch,
    or RFC 3339), else the element's timestamp (ReadFromPubSub's: the publish time, or
    its `timestamp_attribute`). All three outputs are in those fixed windows.
    """

    def __init__(
        self,
        model_dir: str,
        window_s: int = 60,
        allowed_lateness_s: int = 600,
        timestamp_field: Optional[str] = None,
        contamination: Optional[float] = None,
        batch_size: int = 8192,
    ):
        """`model_dir`: a fit output, its model/ base path or a version directory;
        `contamination` overrides the model's default fraction of anomalies."""
        super().__init__()
        if not window_s > 0 or not allowed_lateness_s >= 0:
            raise ValueError(
                f"window_s must be above 0 and allowed_lateness_s at least 0, got "
                f"{window_s} and {allowed_lateness_s}"
            )
        self._model_dir, self._window_s = model_dir, window_s
        self._allowed_lateness_s, self._timestamp_field = allowed_lateness_s, timestamp_field
        self._contamination, self._batch_size = contamination, batch_size

    def _windows(self) -> beam.WindowInto:
        return beam.WindowInto(
            window.FixedWindows(self._window_s),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            allowed_lateness=Duration(seconds=self._allowed_lateness_s),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
        )

    def expand(self, messages):
        parsed = messages | "Parse" >> beam.ParDo(_ParseFn(self._timestamp_field)).with_outputs(
            "rejected", main="rows"
        )
        assigned = (
            parsed.rows
            | "Windows" >> self._windows()
            | "Assign"
            >> AssignClusters(
                self._model_dir,
                batch_size=self._batch_size,
                contamination=self._contamination,
                rejected=True,
            )
        )
        unreadable = parsed.rejected | "RejectedWindows" >> self._windows()
        unscorable = assigned["rejected"] | "DeadLetter" >> beam.Map(_rejected_message)
        counts = (
            assigned["scored"]
            | "ByCluster" >> beam.Map(_cluster_and_flag)
            | "Count" >> beam.CombinePerKey(_sum_counts)
            | "FormatCounts" >> beam.ParDo(_FormatCountsFn())
        )
        return {
            "scored": assigned["scored"] | "Scored" >> beam.Map(_scored_message),
            "rejected": (unreadable, unscorable) | "Rejected" >> beam.Flatten(),
            "counts": counts,
        }
