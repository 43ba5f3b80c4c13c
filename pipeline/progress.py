"""What a run prints while its job runs: one line per phase and per round, from the job's
Beam metrics (transforms/beam/job_metrics.py names them), on every runner.

    reading and validating: 3 of 3 files, 3000 rows read, 3000 valid, 0 rejected (4.1 s)
    analysing: done, init sample of 3000 rows (5.0 s)
    sampling and initialising: 4 starts drawn and refined on the sample, 1 carried on (5.6 s)
    round 1 of 30: inertia 1.2e+04, shift 0.52 (tol 0.0001); 6.1 s elapsed, at most 29 rounds left (~14 s)
    ...
    final pass: 3000 rows assigned (9.9 s)
    writing: results written, publishing (10.4 s)

Where the metrics come from, by runner (`follow`):

- the DirectRunner's engine, Beam's FnApiRunner, in this process or with
  --direct_running_mode=multi_processing: it runs the job inside
  `pipeline.run()`, so this process runs it with a runner that hands over the
  metrics after every bundle (private_apis.fn_api_runner), i.e. as each stage
  ends: live.
- any other runner: `result.metrics()` is polled in a thread while the job
  runs, and read once more when it ends. Dataflow's service answers while the
  job runs (counters and distributions: what job_metrics uses). Beam's local job
  service (launch/portable.sh) and Flink's job server answer with the job's
  metrics only once it has ended: there every line is printed at the end.

Times: "elapsed" is since this process submitted the job; a round's time is
when its update ended on the worker (its `ended_ms`), so rounds seen in one
poll keep their own times. The estimate is an upper bound: the rounds left up
to --max_rounds at the mean time of the rounds so far; convergence ends them
sooner.
"""

import functools
import logging
import threading
import time
from typing import Dict, Optional

from transforms.beam import job_metrics as jm

_LOG = logging.getLogger(__name__)

# How often a remote job's metrics are asked for: a request to the runner's service each.
POLL_SECONDS = 5.0
# Polls that find no metric at all before the user is told why nothing shows.
SILENT_POLLS = 2


def read(results) -> Dict[str, float]:
    """A MetricResults -> {name: value} of the job's metrics in job_metrics.NAMESPACE:
    counters summed over the steps that update them, distributions as their largest
    value (job_metrics' values). Attempted values where the runner has them (they
    move while the job runs), else committed ones."""
    from apache_beam.metrics.metric import MetricsFilter

    queried = results.query(MetricsFilter().with_namespace(jm.NAMESPACE))
    values: Dict[str, float] = {}
    for result in queried.get("counters", []):
        value = result.attempted if result.attempted is not None else result.committed
        if value is not None:
            name = result.key.metric.name
            values[name] = values.get(name, 0) + value
    for result in queried.get("distributions", []):
        value = result.attempted if result.attempted is not None else result.committed
        top = getattr(value, "max", None)
        if top is not None and (getattr(value, "count", 1) or 0) > 0:
            name = result.key.metric.name
            values[name] = max(values.get(name, top), top)
    return values


def duration(seconds: float) -> str:
    """4.1 s, 59 s, 2m05s, 1h02m."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class Progress:
    """Turns successive readings of a job's metrics into lines, each printed once.

    `files`: the number of input files (None when the job matches them itself, a
    template); `max_rounds`, `tol`: the fit's (None for `score`); `started`: when
    the job was submitted (time.time()). `update` may be called from several
    threads, with readings that only grow.
    """

    def __init__(
        self,
        files: Optional[int] = None,
        max_rounds: Optional[int] = None,
        tol: Optional[float] = None,
        started: Optional[float] = None,
        log: logging.Logger = _LOG,
    ):
        self._files, self._max_rounds, self._tol = files, max_rounds, tol
        self.started = time.time() if started is None else started
        self._log = log
        self._lock = threading.Lock()
        self._done = set()  # the phases printed
        self._rounds = 0  # the last round printed
        self._files_shown = 0  # files done when the last reading line was printed
        self.seen = False  # any metric of the job's yet

    def configure(
        self, files: Optional[int], max_rounds: Optional[int], tol: Optional[float]
    ) -> None:
        """Set what the job's spec says (known once the runner is built: see __init__)."""
        self._files, self._max_rounds, self._tol = files, max_rounds, tol

    def update_from(self, results) -> None:
        self.update(read(results))

    def update(self, values: Dict[str, float], now: Optional[float] = None) -> None:
        self.seen = self.seen or bool(values)
        with self._lock:
            for line in self._lines(values, time.time() if now is None else now):
                self._log.info(line)

    def _elapsed(self, values, ms_name: Optional[str], now: float) -> str:
        at = values[ms_name] / 1000 if ms_name and ms_name in values else now
        return duration(at - self.started)

    def _lines(self, v: Dict[str, float], now: float):
        later = any(name in v for name in (jm.ANALYSED_MS, jm.ROWS_ASSIGNED))
        if "read" not in self._done:
            done = int(v.get(jm.FILES_READ, 0) + v.get(jm.FILES_REJECTED, 0))
            complete = later or (self._files is not None and done >= self._files)
            of = f" of {self._files}" if self._files is not None else ""
            if complete or (done and done - self._files_shown >= max(1, (self._files or 0) // 10)):
                unreadable = int(v.get(jm.FILES_REJECTED, 0))
                yield (
                    f"reading and validating: {done}{of} files"
                    f"{f' ({unreadable} unreadable)' if unreadable else ''}, "
                    f"{int(v.get(jm.ROWS_READ, 0))} rows read, {int(v.get(jm.ROWS_VALID, 0))} "
                    f"valid, {int(v.get(jm.ROWS_REJECTED, 0))} rejected"
                    f"{'' if complete else ' so far'} ({self._elapsed(v, jm.READ_MS, now)})"
                )
                self._files_shown = done
            if not complete:
                return
            self._done.add("read")
        if jm.ANALYSED_MS in v and "analysed" not in self._done:
            self._done.add("analysed")
            yield (
                f"analysing: done (tf.Transform), init sample of {int(v.get(jm.SAMPLE_ROWS, 0))} "
                f"rows ({self._elapsed(v, jm.ANALYSED_MS, now)})"
            )
        if jm.INITIALISED_MS in v and "initialised" not in self._done:
            self._done.add("initialised")
            starts, carried = int(v.get(jm.STARTS, 0)), int(v.get(jm.CARRIED, 0))
            yield (
                f"sampling and initialising: {starts} start{'s' if starts != 1 else ''} on the "
                f"init sample, {carried} fitted over all rows "
                f"({self._elapsed(v, jm.INITIALISED_MS, now)})"
            )
        yield from self._round_lines(v, now)
        if jm.ROWS_ASSIGNED in v and "final" not in self._done:
            valid = v.get(jm.ROWS_VALID)
            if jm.RESULTS_WRITTEN_MS in v or (valid is not None and v[jm.ROWS_ASSIGNED] >= valid):
                self._done.add("final")
                # (The results are written after the final pass: its time, if known, bounds it.)
                yield (
                    f"final pass: {int(v[jm.ROWS_ASSIGNED])} rows assigned "
                    f"({self._elapsed(v, jm.RESULTS_WRITTEN_MS, now)})"
                )
        if jm.RESULTS_WRITTEN_MS in v and "written" not in self._done:
            self._done.add("written")
            yield (
                "writing: centroids, metrics.json and report.html written; publishing "
                f"({self._elapsed(v, jm.RESULTS_WRITTEN_MS, now)})"
            )

    def _round_lines(self, v: Dict[str, float], now: float):
        while jm.round_name(self._rounds + 1, "ended_ms") in v:
            r = self._rounds = self._rounds + 1
            name = functools.partial(jm.round_name, r)
            inertia = jm.decode_float(v.get(name("inertia"), 0))
            shift = jm.decode_float(v.get(name("shift"), 0))
            moving = int(v.get(name("moving"), 0))
            carried = int(v.get(jm.CARRIED, 1)) or 1
            of = f" of {self._max_rounds}" if self._max_rounds else ""
            tol = f" (tol {self._tol:g})" if self._tol is not None else ""
            what = (
                f"lowest inertia {inertia:.6g}, largest shift {shift:.3g}{tol}, "
                f"{moving} of {carried} candidates still moving"
                if carried > 1
                else f"inertia {inertia:.6g}, shift {shift:.3g}{tol}"
            )
            ended = v[name("ended_ms")] / 1000
            line = f"round {r}{of}: {what}; {duration(ended - self.started)} elapsed"
            if moving == 0:
                line += ", converged"
            elif self._max_rounds and r >= self._max_rounds:
                line += ", the last round (--max_rounds)"
            elif self._max_rounds:
                line += self._estimate(v, r, ended)
            yield line

    def _estimate(self, v: Dict[str, float], r: int, ended: float) -> str:
        """', at most N rounds left (~T)': the rounds left at the mean time of those so far,
        measured from the end of the initialisation (or of round 1, without it)."""
        left = self._max_rounds - r
        rounds_left = f"at most {left} round{'s' if left != 1 else ''} left"
        if jm.INITIALISED_MS in v:
            first, rounds = v[jm.INITIALISED_MS] / 1000, r
        elif r > 1:
            first, rounds = v[jm.round_name(1, "ended_ms")] / 1000, r - 1
        else:
            return f", {rounds_left}"
        per_round = max(0.0, ended - first) / rounds
        return f", {rounds_left} (~{duration(left * per_round)})"


def follow(result, progress: Progress, wait) -> None:
    """Call `wait()` (which waits for the job `result`) while a thread polls the job's
    metrics into `progress` every POLL_SECONDS; read them once more when it returns.

    A failed reading is skipped (the job's own outcome is what `wait` reports)."""
    from pipeline import private_apis

    stop = threading.Event()

    def poll():
        polls = 0
        while not stop.wait(POLL_SECONDS):
            _read_into(progress, lambda: private_apis.job_metrics_now(result))
            polls += 1
            if polls == SILENT_POLLS and not progress.seen:
                _LOG.info(
                    "the runner reports no metrics while the job runs (Beam's local job "
                    "service and Flink's job server report them once it has ended): the "
                    "phases and rounds follow then"
                )

    thread = threading.Thread(target=poll, name="shardmeans-progress", daemon=True)
    thread.start()
    try:
        wait()
    finally:
        stop.set()
        thread.join(timeout=POLL_SECONDS)
    _read_into(progress, lambda: private_apis.job_metrics_now(result))


def _read_into(progress: Progress, metrics) -> None:
    try:
        progress.update_from(metrics())
    except Exception:  # noqa: BLE001 -- progress is best effort; the job's result is not
        _LOG.debug("could not read the job's metrics", exc_info=True)
