"""The Beam metrics a fit updates as it runs, so that a driver can follow it (the CLI's
`pipeline/progress.py` reads them), all in the namespace `NAMESPACE`.

Why metrics, not log lines: a worker's logs stay on the worker (a local SDK process,
Flink's task managers, Dataflow's VMs), while every runner reports the job's metrics
to whoever submitted it.

Counters for what adds up (rows, files). Distributions for values (a round's
inertia and shift, the time a step ended): a value is read back as the
distribution's max, which stays right when a retried bundle reports it twice,
where a counter would add both. Gauges and string sets would fit values better,
but Beam's Dataflow metrics client (DataflowMetrics.query) returns neither: it
reads counters and distributions only. A distribution holds int64s, so a float
goes in as `encode_float`'s integer (9 significant digits, below 2**53: exact
also where a metrics API carries numbers as JSON doubles).

Outside a running DoFn or CombineFn (a unit test calling a function), Beam
drops the updates.
"""

import math
import time

from apache_beam.metrics import Metrics

NAMESPACE = "shardmeans"

# ReadValidRows (pipeline/io/ingest.py), counters.
FILES_READ, FILES_REJECTED = "files_read", "files_rejected"
READ_MS = "read_ms"  # a distribution: when a file was done; its max, when the last one was
ROWS_READ, ROWS_VALID, ROWS_REJECTED = "rows_read", "rows_valid", "rows_rejected"
# KMeans, distributions: the ms (Unix time) each step ended, and what it found.
ANALYSED_MS, SAMPLE_ROWS = "analysed_ms", "sample_rows"
INITIALISED_MS, STARTS, CARRIED = "initialised_ms", "starts", "carried"
# The final pass (counter) and the CLI's writers (distributions).
ROWS_ASSIGNED = "rows_assigned"
RESULTS_WRITTEN_MS = "results_written_ms"

# One distribution per round r and value, set by the round's update (LloydUpdateFn),
# only in rounds that updated a candidate (not in those that pass a converged state on).
ROUND_VALUES = ("inertia", "shift", "moving", "ended_ms")

_DIGITS = 9  # significant digits kept by encode_float
_SCALE = 10 ** (_DIGITS - 1)
_EXPONENT_OFFSET = 400  # above the largest negative decimal exponent of a double (-324)


def round_name(round_: int, value: str) -> str:
    """The metric of round `round_`'s `value` (one of ROUND_VALUES): 'round_3_inertia'."""
    return f"round_{round_}_{value}"


def count(name: str, n: int) -> None:
    Metrics.counter(NAMESPACE, name).inc(int(n))


def record(name: str, value: int) -> None:
    """Set a value metric to an integer (the last one a step reports; see the module doc)."""
    Metrics.distribution(NAMESPACE, name).update(int(value))


def record_float(name: str, value: float) -> None:
    record(name, encode_float(value))


def record_time(name: str) -> None:
    """Set `name` to now, in ms since the epoch."""
    record(name, int(time.time() * 1000))


def encode_float(value: float) -> int:
    """A finite float >= 0 -> an int that `decode_float` reads back to 9 significant digits,
    below 2**53, and ordered as the floats are (the max of several is the largest).
    Values below 1e-300 read back as 0."""
    if not value >= 1e-300 or not math.isfinite(value):  # (subnormals too: 10**-324 is 0)
        return 0
    exponent = math.floor(math.log10(value))
    mantissa = round(value / 10.0**exponent * _SCALE)
    if mantissa >= 10 * _SCALE:  # rounded up to the next power of ten
        exponent, mantissa = exponent + 1, _SCALE
    return (exponent + _EXPONENT_OFFSET) * 10 * _SCALE + mantissa


def decode_float(code: int) -> float:
    if code <= 0:
        return 0.0
    exponent, mantissa = divmod(int(code), 10 * _SCALE)
    return mantissa / _SCALE * 10.0 ** (exponent - _EXPONENT_OFFSET)
