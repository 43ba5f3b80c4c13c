"""The lines a run prints from its job's metrics (pipeline.progress), and the metrics'
encoding (transforms.beam.job_metrics): from made-up readings and from a real
FnApiRunner's metrics, in this process."""

import logging

import apache_beam as beam
import pytest

from pipeline import private_apis, progress
from transforms.beam import job_metrics as jm

T0 = 1_800_000_000.0  # when the job was submitted (time.time())


def _ms(seconds):
    return (T0 + seconds) * 1000


@pytest.mark.parametrize(
    "value", [0.0, 1e-300, 3e-5, 0.1, 1.0, 9.9999999999, 578.609, 123456.789, 1.7e308]
)
def test_a_float_survives_its_encoding(value):
    code = jm.encode_float(value)
    assert 0 <= code < 2**53
    assert jm.decode_float(code) == pytest.approx(value, rel=1e-8)


def test_the_encoding_keeps_the_order_of_the_floats():
    values = [0.0, 1e-12, 0.5, 0.99999, 1.0, 7.5, 10.0, 1e6, 3.3e100]
    codes = [jm.encode_float(v) for v in values]
    assert codes == sorted(codes) and len(set(codes)) == len(codes)


def _lines(caplog, shown, values, now):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        shown.update(values, now=T0 + now)
    return [r.getMessage() for r in caplog.records]


def _round(values, r, inertia, shift, moving, ended):
    values[jm.round_name(r, "inertia")] = jm.encode_float(inertia)
    values[jm.round_name(r, "shift")] = jm.encode_float(shift)
    values[jm.round_name(r, "moving")] = moving
    values[jm.round_name(r, "ended_ms")] = _ms(ended)


def test_one_line_per_phase_and_round_each_once(caplog):
    shown = progress.Progress(files=3, max_rounds=10, tol=1e-4, started=T0)
    v = {jm.FILES_READ: 1, jm.ROWS_READ: 100, jm.ROWS_VALID: 99, jm.ROWS_REJECTED: 1}
    # A file of three: a line "so far" (a remote runner's reading of a running job).
    assert _lines(caplog, shown, dict(v), 1) == [
        "reading and validating: 1 of 3 files, 100 rows read, 99 valid, 1 rejected so far (1.0 s)"
    ]
    assert _lines(caplog, shown, dict(v), 2) == []  # nothing new: nothing printed
    v.update({jm.FILES_READ: 3, jm.ROWS_READ: 300, jm.ROWS_VALID: 298, jm.ROWS_REJECTED: 2})
    v[jm.READ_MS] = _ms(2.5)
    v.update({jm.ANALYSED_MS: _ms(3), jm.SAMPLE_ROWS: 298})
    v.update({jm.INITIALISED_MS: _ms(4), jm.STARTS: 4, jm.CARRIED: 1})
    _round(v, 1, 1500.0, 0.5, 1, 6)
    _round(v, 2, 1200.0, 0.01, 1, 8)
    assert _lines(caplog, shown, dict(v), 8.5) == [
        "reading and validating: 3 of 3 files, 300 rows read, 298 valid, 2 rejected (2.5 s)",
        "analysing: done (tf.Transform), init sample of 298 rows (3.0 s)",
        "sampling and initialising: 4 starts on the init sample, 1 fitted over all rows (4.0 s)",
        "round 1 of 10: inertia 1500, shift 0.5 (tol 0.0001); 6.0 s elapsed, "
        "at most 9 rounds left (~18 s)",
        "round 2 of 10: inertia 1200, shift 0.01 (tol 0.0001); 8.0 s elapsed, "
        "at most 8 rounds left (~16 s)",
    ]
    _round(v, 3, 1190.0, 5e-5, 0, 9)
    v[jm.ROWS_ASSIGNED] = 298
    v[jm.RESULTS_WRITTEN_MS] = _ms(70)
    assert _lines(caplog, shown, dict(v), 75) == [
        "round 3 of 10: inertia 1190, shift 5e-05 (tol 0.0001); 9.0 s elapsed, converged",
        "final pass: 298 rows assigned (1m10s)",
        "writing: centroids, metrics.json and report.html written; publishing (1m10s)",
    ]
    assert _lines(caplog, shown, dict(v), 80) == []


def test_several_candidates_and_the_last_round():
    shown = progress.Progress(files=None, max_rounds=2, tol=0.0, started=T0)
    v = {jm.ANALYSED_MS: _ms(1), jm.INITIALISED_MS: _ms(2), jm.STARTS: 8, jm.CARRIED: 2}
    _round(v, 1, 10.0, 0.3, 2, 3)
    _round(v, 2, 9.0, 0.2, 1, 4)
    lines = list(shown._lines(v, T0 + 5))
    # Without the number of files (a template), the read is done once the analysis is.
    assert lines[0].startswith("reading and validating: 0 files")
    assert lines[-2] == (
        "round 1 of 2: lowest inertia 10, largest shift 0.3 (tol 0), 2 of 2 candidates "
        "still moving; 3.0 s elapsed, at most 1 round left (~1.0 s)"
    )
    assert lines[-1].endswith("4.0 s elapsed, the last round (--max_rounds)")


def test_durations():
    assert [progress.duration(s) for s in (0.04, 9.96, 59, 125, 3725)] == [
        "0.0 s",
        "10.0 s",
        "59 s",
        "2m05s",
        "1h02m",
    ]


class _CountAndRecord(beam.DoFn):
    def process(self, x):
        jm.count(jm.ROWS_READ, x)
        jm.record_float(jm.round_name(1, "inertia"), 0.25 * x)
        yield x


def test_the_fn_api_runner_hands_over_the_metrics_as_stages_end():
    """The runner built with `on_metrics` calls it after each bundle, with what the job's
    result gives at the end: counters summed, a value's largest."""
    from apache_beam.options.pipeline_options import PipelineOptions

    seen = []
    runner = private_apis.fn_api_runner(PipelineOptions([]), on_metrics=seen.append)
    with beam.Pipeline(runner=runner) as p:
        _ = p | beam.Create([1, 2, 3]) | beam.ParDo(_CountAndRecord())
    assert seen, "no metrics handed over"
    last = progress.read(seen[-1])
    assert last[jm.ROWS_READ] == 6
    assert jm.decode_float(last[jm.round_name(1, "inertia")]) == 0.75
    # Before the job ends: every reading before the last is a job still running.
    assert all(isinstance(progress.read(m), dict) for m in seen)


def test_detach_needs_a_remote_runner(tmp_path, capfd):
    from pipeline.cli import main

    (tmp_path / "in.csv").write_text("a,b\n1,2\n3,4\n")
    argv = ["fit", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out")]
    assert main([*argv, "--k", "2", "--detach"]) == 2
    err = capfd.readouterr().err
    assert "shardmeans fit: error: --detach needs a remote runner" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.*"))


def test_dataflows_metrics_client_gives_the_round_lines():
    """What Beam's Dataflow client (DataflowMetrics) makes of the service's answer, a JSON
    JobMetrics with our counter and distributions, both tentative (attempted) and
    committed: the same values, the value metrics exact through the JSON doubles."""
    from unittest import mock

    from apache_beam.runners.dataflow.dataflow_metrics import DataflowMetrics
    from google.cloud import dataflow
    from google.protobuf import json_format

    def metric(name, tentative, scalar=None, top=None):
        context = {"namespace": jm.NAMESPACE, "step": "s2"}
        if tentative:
            context["tentative"] = "true"
        entry = {"name": {"context": context, "name": name, "origin": "user"}}
        if top is None:
            entry["scalar"] = scalar
        else:
            entry["distribution"] = {"min": top, "max": top, "count": 2, "sum": 2 * top}
        return entry

    values = {
        jm.round_name(1, "inertia"): jm.encode_float(578.609123),
        jm.round_name(1, "shift"): jm.encode_float(0.0042),
        jm.round_name(1, "moving"): 1,
        jm.round_name(1, "ended_ms"): int(_ms(42)),
    }
    answer = {
        "metrics": [metric(jm.ROWS_READ, t, scalar=3000) for t in (True, False)]
        + [metric(name, t, top=value) for name, value in values.items() for t in (True, False)]
    }
    response = dataflow.JobMetrics()
    json_format.ParseDict(answer, response._pb)
    client, job = mock.Mock(), mock.Mock()
    client.get_job_metrics.return_value = response
    job.job_id.return_value = "j"
    job.is_in_terminal_state.return_value = False
    results = DataflowMetrics(client, job)
    results._translate_step_name = lambda name: name  # (no job graph here)
    read = progress.read(results)
    assert read[jm.ROWS_READ] == 3000
    assert {name: read[name] for name in values} == values
    shown = progress.Progress(files=None, max_rounds=30, tol=1e-4, started=T0)
    lines = list(shown._round_lines(read, T0 + 50))
    assert lines == [
        "round 1 of 30: inertia 578.609, shift 0.0042 (tol 0.0001); 42 s elapsed, "
        "at most 29 rounds left"
    ]
