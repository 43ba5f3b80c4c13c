"""The private or internal Beam and CPython APIs the command relies on, each with its reason.

Kept in one place so that an upgrade of Beam or Python has one file to check.
tests/unit/test_units.py (the local runner's options, the exit),
tests/unit/test_cli_errors.py (every Beam flag accepted), tests/unit/test_progress.py
(the metrics after every bundle) and tests/runners/test_runners.py (the portable
runner's metrics and job id) exercise them.
"""

import atexit
import logging
import os
import sys
import threading


def fn_api_runner(options, on_metrics=None):
    """The DirectRunner's batch engine, Beam's FnApiRunner, built as the DirectRunner builds it.

    Why not `DirectRunner()`: it first checks whether Prism (Beam's Go runner)
    could run the job, serializes it and tries to start Prism, downloading its
    binary where the internet is reachable: a fixed cost on every job
    (bench/RESULTS.md, 'Fixed costs'), and, on a machine online, a different
    runner, untested with this job.

    Internal APIs: `fn_runner.FnApiRunner` and `ExtendedProvisionInfo` (the
    runner's constructor is not public), and
    `JobServiceHandle.encode_pipeline_options`, which encodes the options as the
    DirectRunner does, so that they reach the SDK workers of
    --direct_running_mode=multi_processing.

    What reaches the workers is `worker_options`, not every option as the
    DirectRunner sends them: a worker parses them before it imports any of the
    job's code, and warned "Discarding unparseable args" for each of the job's
    own flags (and for Beam's flags it cannot parse back, see there). The
    workers also import pipeline.worker_plugin (Beam's --beam_plugins), which
    imports TensorFlow without its start-up chatter.

    `on_metrics`, if given, is called after every bundle with the job's metrics so
    far (a MetricResults of the user metrics, as `result.metrics()` gives them at
    the end): see `_reporting_fn_api_runner`.
    """
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    sent = worker_options(options)
    sent["beam_plugins"] = [*(sent.get("beam_plugins") or []), "pipeline.worker_plugin"]
    encoded = JobServiceHandle.encode_pipeline_options(sent)
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    )
    if on_metrics is None:
        return fn_runner.FnApiRunner(provision_info=provision_info)
    return _reporting_fn_api_runner()(on_metrics, provision_info=provision_info)


def _reporting_fn_api_runner() -> type:
    """A FnApiRunner that hands the job's metrics so far to a callback after every bundle.

    Why: the FnApiRunner runs the whole job inside `pipeline.run()` and only then
    returns a result whose `metrics()` can be queried; nothing outside the run
    can read them while it runs. Each bundle's response carries that bundle's
    metrics (from this process or, with multi_processing, from the worker
    process, over the Fn API), which the runner merges per stage into the
    result: this does the same as each bundle ends. The DirectRunner's batch
    bundles are whole stages, so a step's metrics arrive when its stage ends.

    Private APIs: `FnApiRunner.run_stages` and `_execute_bundle` (its loop over
    bundles, and the signature it calls them with), `FnApiMetrics` (the
    MetricResults its result builds), `monitoring_infos.consolidate`.
    """
    import itertools

    from apache_beam.metrics.monitoring_infos import consolidate
    from apache_beam.metrics.monitoring_infos import is_user_monitoring_info as is_user
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    class ReportingFnApiRunner(fn_runner.FnApiRunner):
        def __init__(self, on_metrics, **kwargs):
            super().__init__(**kwargs)
            self._on_metrics, self._by_stage = on_metrics, {}

        def run_stages(self, stage_context, stages):
            self._by_stage = {}
            return super().run_stages(stage_context, stages)

        def _execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):
            result = super()._execute_bundle(
                runner_execution_context, bundle_context_manager, bundle_input
            )
            stage = bundle_context_manager.stage.name
            # The user metrics only (the runner keeps every metric itself): the call
            # after each bundle then reads a few per stage, not the system ones too.
            infos = [i for i in result.process_bundle.monitoring_infos if is_user(i)]
            if stage in self._by_stage:  # as run_stages merges a stage's bundles
                infos = consolidate(itertools.chain(infos, self._by_stage[stage]))
            self._by_stage[stage] = list(infos)
            self._on_metrics(fn_runner.FnApiMetrics(dict(self._by_stage), user_metrics_only=True))
            return result

    return ReportingFnApiRunner


def worker_options(options) -> dict:
    """The options an SDK worker can parse: those set to other than their default, of
    Beam's own option classes (apache_beam.options.pipeline_options, which is all a
    worker has imported when it parses them).

    Why: a worker rebuilds the options as flags (`PipelineOptions.from_dictionary`)
    and parses them with the classes it knows; any other flag is logged as
    "Discarding unparseable args". The job's own flags are parameters the graph
    already carries (no worker reads them); options of modules a worker does not
    import (apache_beam.runners.render) have no parser there; and Beam's booleans
    whose flag is `--no_X` (`pipeline_type_check`, `direct_runner_use_stacked_bundle`)
    come back as a `--X` that no class defines, unless left at their default, as
    every default is here: the worker's defaults are the same.

    Private API: `PipelineOptions.__subclasses__()` as the options' registry (Beam's
    `get_all_options` reads it so too).
    """
    from apache_beam.options import pipeline_options

    known = set()
    for cls in pipeline_options.PipelineOptions.__subclasses__():
        if cls.__module__ == pipeline_options.__name__:
            known.update(cls([]).get_all_options(current_only=True))
    return {k: v for k, v in options.get_all_options(drop_default=True).items() if k in known}


def beam_argument_parser() -> type:
    """The argparse.ArgumentParser subclass Beam parses pipeline options with.

    Why: pipeline.flags checks every flag against one parser holding every
    PipelineOptions class's flags, as Beam's `get_all_options` builds it; the
    classes' `add_value_provider_argument` calls need Beam's own parser class.

    Private API: `apache_beam.options.pipeline_options._BeamArgumentParser`.
    """
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    return _BeamArgumentParser


def exit_without_teardown(code: int) -> None:
    """End the process with `code`, doing what a normal exit does but unloading modules.

    Why: unloading TensorFlow, tf.Transform and Beam is one of a job's larger
    fixed costs (bench/RESULTS.md, 'Fixed costs'), paid once all its outputs are
    written, for nothing. What a normal exit does before that still happens:
    non-daemon threads are waited for (not after Ctrl-C, status 130: the job's
    threads may never end, and the user asked to stop), the exit handlers run
    (Beam's stop the job services it started), the logs and output streams are
    flushed.

    Private APIs: `atexit._run_exitfuncs` (the handlers a normal exit runs) and
    `os._exit` (an exit without the interpreter's teardown).
    """
    for thread in threading.enumerate():
        if (
            code != 130
            and thread is not threading.current_thread()
            and not thread.daemon
            and thread.is_alive()
        ):  # (a thread created but never started cannot be joined)
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def job_metrics_now(result):
    """`result.metrics()` as the runner reports them now, for a job still running.

    Why: the portable runner's PipelineResult asks the job service once and keeps
    that first answer (`_metrics`), so later calls would repeat it; it is
    dropped before each call. (Dataflow's result asks the service every time
    until the job has ended.)

    Private API: `apache_beam.runners.portability.portable_runner.PipelineResult._metrics`.
    """
    if hasattr(result, "_metrics") and type(result).__module__.endswith("portable_runner"):
        result._metrics = None  # noqa: SLF001
    return result.metrics()


def job_id(result):
    """The runner's id of a submitted job, or None: Dataflow's `job_id()` (public), the
    portable runner's job service's id (private: `PipelineResult._job_id`)."""
    if callable(getattr(result, "job_id", None)):
        return result.job_id()
    return getattr(result, "_job_id", None)
