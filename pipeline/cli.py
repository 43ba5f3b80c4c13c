"""The `shardmeans` command: `fit`, `score`, `stream` and `generate` (also `python -m pipeline ...`).

Flags the job does not define go to Beam as pipeline options (`--runner`,
`--direct_num_workers`, `--temp_location`, ...); a flag neither knows stops the
command (pipeline.flags). Exit status: 0 success (for --detach: the job was
submitted); 2 a user error, one readable line and no traceback (`--verbose` logs
it); 130 Ctrl-C; anything else (1: a bug or a failed job, with its traceback) a
failure. --detach prints one JSON line on stdout for a scheduler (`detached_record`).
"""

import json
import logging
import os
import sys
import time
from typing import List, Optional

_USAGE = """usage: shardmeans COMMAND [FLAGS]

commands:
  fit       fit K-Means on sharded CSV, Parquet or TFRecord files
  score     assign the rows of new data to the clusters of a fitted model
  stream    score JSON messages from Pub/Sub as they arrive (a streaming job)
  generate  write sample data: Gaussian blobs with features of very different scales

shardmeans COMMAND --help lists the command's flags; shardmeans --version prints the version."""


def _version() -> str:
    """The installed distribution's version (setup.py's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shardmeans")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def _user_message(error: BaseException, output: Optional[str] = None) -> Optional[str]:
    """The one line for an error the user can fix (bad input or flags, a full disk,
    permission denied), also when a runner wrapped it in its own; None for a bug.
    `output` (--output) is named for a full disk whose error names no path."""
    from pipeline.failures import user_message

    return user_message(error, output)


def _run_job(command: str, argv: List[str]) -> int:
    """Parse `argv` as pipeline options, build the job's graph, run it, report."""
    # The driver's start as the report's provenance gives it: before the job's imports
    # (TensorFlow, Beam) and the reading of the input's layout.
    started = time.time()
    if "-h" in argv or "--help" in argv:
        # From transforms.core.parameters alone: importing Beam (pipeline.options)
        # would take seconds of every --help.
        from pipeline.flag_reference import help_parser

        help_parser(command).print_help()
        return 0
    from apache_beam.options.pipeline_options import StandardOptions

    from pipeline.options import (
        KMeansOptions,
        OutputOptions,
        ViewCachingOptions,
    )

    # The first line, before the seconds that importing Beam and TensorFlow take.
    logging.getLogger("pipeline.progress").info("%s: loading Beam and TensorFlow", command)
    import apache_beam as beam

    from pipeline import logs

    logs.import_tensorflow()  # first, without its start-up chatter (pipeline.logs)
    from pipeline import fit, private_apis, progress, score, workdir
    from pipeline.outputs import run_output
    from transforms.beam.model_paths import model_base
    from transforms.core.errors import UserInputError
    from transforms.step.devices import resolve_devices

    options = ViewCachingOptions(argv)
    runner = None
    in_process = options.view_as(StandardOptions).runner in (None, "DirectRunner")
    detach = options.view_as(OutputOptions).detach
    if detach and in_process:
        raise UserInputError(
            "--detach needs a remote runner (--runner=DataflowRunner, FlinkRunner or "
            "PortableRunner): the DirectRunner runs the job in this process"
        )
    # The job's phases and rounds, from its metrics (pipeline.progress).
    shown = progress.Progress()
    if in_process:
        runner = private_apis.fn_api_runner(options, on_metrics=shown.update_from)
    # Split the CPU (--devices cpu:N) before anything starts TensorFlow here.
    resolve_devices(options.view_as(KMeansOptions).devices)
    if command == "fit":
        spec = fit.fit_spec(options)
        spec = spec._replace(provenance=fit.driver_provenance([command, *argv], options, started))
        reads = [spec.init_path] if spec.init_path else []
        # The whole base path of a warm start's model, as score's below.
        reads += [model_base(spec.init_model.model_dir)] if spec.init_model else []
    else:
        spec = score.score_spec(options)
        spec = spec._replace(provenance=fit.driver_provenance([command, *argv], options, started))
        # The whole base path: an output inside it (model/2) would be a version TF Serving loads.
        reads = [model_base(spec.model_dir)]
    run = run_output.begin(
        spec.output,
        command,
        options.view_as(OutputOptions).overwrite,
        reads + list(spec.files),
        input_pattern=spec.input,
        in_process=runner is not None,
    )
    work_dirs = [fit.work_dir(spec, run)] if command == "fit" else []
    shown.configure(
        files=None if spec.match_when_run else len(spec.files),
        max_rounds=spec.max_rounds if command == "fit" else None,
        tol=spec.tol if command == "fit" else None,
    )
    try:
        pipeline = beam.Pipeline(runner=runner, options=options)
        if command == "fit":
            fit.build_fit_pipeline(pipeline, spec, run)
        else:
            score.build_score_pipeline(pipeline, spec, run)
        _log_start(options, spec, in_process)
        shown.started = time.time()
        result = pipeline.run()
        if workdir.is_template_run(options):
            run_output.abort(run)  # nothing ran here: the template publishes when launched
            print("wrote a job template; nothing was run")
            return 0
        if detach:
            # The job publishes the outputs and releases the lock itself (its last
            # step): nothing of the run is removed here. If it fails, its lock and
            # stage stay, as for any remote run whose driver is gone (run_output).
            _print_detached(result, options, run)
            return 0
        if in_process:  # (done: the FnApiRunner ran the job inside run())
            _wait(result)
        else:
            progress.follow(result, shown, lambda: _wait(result))
        run_output.check_published(run)
    except BaseException:
        left = run_output.abort(run, work_dirs)
        if left:
            print(f"shardmeans {command}: {left}", file=sys.stderr)
        raise
    _print_summary(spec.output)
    return 0


def _runner_name(options, in_process: bool) -> str:
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    if not in_process:
        return str(options.view_as(StandardOptions).runner)
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing":
        return f"the DirectRunner ({direct.direct_num_workers or 1} local worker processes)"
    return "the DirectRunner (in this process)"


def _log_start(options, spec, in_process: bool) -> None:
    """The first line of a run: where the job runs and what it reads, before it starts."""
    files = "the files matching --input" if spec.match_when_run else f"{len(spec.files)} files"
    logging.getLogger("pipeline.progress").info(
        "running on %s: reading and validating %s", _runner_name(options, in_process), files
    )


def _print_detached(result, options, run) -> None:
    """What a detached run prints: one JSON line on stdout, for a scheduler to parse
    (`detached_record`), and on stderr the same for a person: the job, how to follow
    it, where its outputs will be."""
    from apache_beam.options.pipeline_options import (
        FlinkRunnerOptions,
        GoogleCloudOptions,
        PortableOptions,
    )

    record = detached_record(result, options, run)
    job, runner = record["job_id"], record["runner"]
    lines = [f"submitted run {run.run_id} to {runner}: job {job}"]
    gcp = options.view_as(GoogleCloudOptions)
    if "Dataflow" in runner:
        lines.append(
            f"follow it: https://console.cloud.google.com/dataflow/jobs/{gcp.region}/{job}"
            f"?project={gcp.project}, or gcloud dataflow jobs describe {job} "
            f"--region {gcp.region} --project {gcp.project}"
        )
    elif "Flink" in runner:
        master = options.view_as(FlinkRunnerOptions).flink_master
        lines.append(f"follow it: the Flink web UI at {master}")
    else:
        endpoint = options.view_as(PortableOptions).job_endpoint
        lines.append(f"follow it: the job service at {endpoint} (job {job})")
    lines.append(
        f"outputs: {run.output}/ once the job has published them ({record['marker']} "
        f"names run {run.run_id}); until then {run.lock} holds the output. If the job "
        f"fails, delete {run.lock} and {run.stage}"
    )
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps(record), flush=True)


def detached_record(result, options, run) -> dict:
    """The line a detached run prints on stdout, as a dict of JSON values:
    {"command": "fit" or "score", "run_id": str, "job_id": str or None (the runner's),
    "runner": str, "output": str, "marker": str (OUTPUT/_SUCCESS: it appears, naming
    run_id, once the job has published every output: what to wait for), "lock": str
    (held by the job until then), "stage": str (where the job writes first)}."""
    from pipeline import private_apis
    from pipeline.outputs.run_output import MARKER

    job = private_apis.job_id(result)
    return {
        "command": run.command,
        "run_id": run.run_id,
        "job_id": None if job is None else str(job),
        "runner": _runner_name(options, in_process=False),
        "output": run.output,
        "marker": f"{run.output.rstrip('/')}/{MARKER}",
        "lock": run.lock,
        "stage": run.stage,
    }


def _wait(result) -> None:
    """Wait for the job; if waiting ends in an error or Ctrl-C, cancel a job still running
    (a remote runner's job outlives its driver) before the run's files are removed."""
    try:
        result.wait_until_finish()
    except BaseException:
        try:
            result.cancel()
        except Exception:  # noqa: BLE001 -- finished, or a runner that cannot cancel
            pass
        raise


def _print_summary(output: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(FileSystems.join(output, "metrics.json")) as f:
        m = json.load(f)
    files = f" ({m['files_rejected']} unreadable files rejected)" if m.get("files_rejected") else ""
    print(
        f"rows: {m['rows_read']} read, {m['rows_valid']} valid, {m['rows_rejected']} "
        f"rejected{files}"
    )
    if "rounds" not in m:  # a score job
        print(
            f"outputs of run {m['run_id']}: {output}/ (assignments/, rejected/, metrics.json, report.html)"
        )
        warning = m.get("drift", {}).get("warning")
        if warning:
            print(f"shardmeans score: warning: {warning}", file=sys.stderr)
        return
    print(
        f"rounds: {m['rounds']} ({'converged' if m['converged'] else _not_converged(m)}), "
        f"inertia: {m['inertia']:.6g}"
    )
    if m.get("restarts"):
        scores = "".join(
            f"{k}: {v[m['select']]:.3g}, " if v[m["select"]] is not None else ""
            for k, v in m.get("sweep", {}).items()
        )
        chosen = (
            f"K={m['k']} by {m['select']} ({scores.rstrip(', ')}), "
            if "sweep" in m
            else f"K={m['k']}, "
        )
        how = (
            "on the init sample"
            if m.get("restarts_on") == "sample"
            else "fitted together over all rows"
        )
        print(
            f"chosen: {chosen}seed {m['init_seed']}, the best of {len(m['restarts'])} starts {how}"
        )
    print(f"cluster sizes: {m['cluster_sizes']}")
    merged = ", hierarchy.json" if "merge_to" in m else ""
    print(
        f"outputs of run {m['run_id']}: {output}/ (model/1/, transform_fn/, centroids.csv, "
        f"centroids.npy, "
        f"metrics.json, report.html{merged}, assignments/, rejected/)"
    )


def _not_converged(m: dict) -> str:
    """'not converged', with how much the last round still gained, so the user can
    judge whether more rounds (--max_rounds) are worth their passes."""
    history = m.get("inertia_history") or []
    if len(history) < 2 or not history[-2]:
        return "not converged"
    gain = 100 * (history[-2] - history[-1]) / history[-2]
    return f"not converged: the last round lowered the inertia {gain:.2g}%; see --max_rounds"


def _generate(argv: List[str]) -> int:
    from pipeline import generate

    parser = generate.arg_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help()  # argparse's own -h would exit the process from here
        return 0
    args = parser.parse_args(argv)  # a bad flag: pipeline.flags.FlagError, one line
    if args.format == "tfrecord":  # written with TensorFlow: imported without its chatter
        from pipeline import logs

        logs.import_tensorflow()
    paths = generate.generate(
        args.output,
        rows=args.rows,
        features=args.features,
        clusters=args.clusters,
        fmt=args.format,
        shards=args.shards,
        seed=args.seed,
        dtype=args.dtype,
    )
    print(
        f"wrote {args.rows} rows x {args.features} features ({args.clusters} blobs) "
        f"in {len(paths)} {args.format} files under {args.output}"
    )
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; its exit status: 0, 2 for an error the user can fix (one line
    on stderr, no traceback), 130 for Ctrl-C. A bug or a failed job raises, with its
    traceback (the process exits with 1)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--version":
        print(f"shardmeans {_version()}")
        return 0
    if argv and argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0
    if not argv or argv[0] not in ("fit", "score", "stream", "generate"):
        print(_USAGE, file=sys.stderr)
        if argv:  # as argparse ends: the usage, then the error
            print(f"shardmeans: error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    # --verbose is the command's own flag: taken out before the flags reach Beam,
    # which does not know it.
    verbose = "--verbose" in rest
    rest = [arg for arg in rest if arg != "--verbose"]
    # Importing TensorFlow eagerly imports Keras 3's optimizers, and Keras 3 pulls
    # in its scikit-learn wrappers and matplotlib.pyplot: seconds of every run.
    # tf.Transform imports tf_keras anyway, so tf.keras can be tf_keras; nothing
    # in shardmeans uses tf.keras. (Must be set before TensorFlow is imported.)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from pipeline import logs

    # (Sets TF_CPP_MIN_LOG_LEVEL unless --verbose: also before TensorFlow is imported.)
    logs.configure(verbose)
    try:
        if command == "generate":
            return _generate(rest)
        if "-h" not in rest and "--help" not in rest:
            # Before anything reads the input: Beam would drop a mistyped flag with a
            # warning and run the job on the defaults.
            from pipeline.flags import check_job_flags

            check_job_flags(rest, prog=f"shardmeans {command}")
        if command == "stream":  # pipeline.stream: Pub/Sub to Pub/Sub, no output directory
            from pipeline import stream

            return stream.main(rest)
        return _run_job(command, rest)
    except BaseException as e:
        from pipeline.failures import was_interrupted
        from pipeline.flags import flag_value

        if was_interrupted(e):  # also Ctrl-C inside a DoFn, which Beam wraps
            status, line = 130, "interrupted"  # 128 + SIGINT, as shells report it
        else:
            message = (
                _user_message(e, output=flag_value(rest, "--output"))
                if isinstance(e, Exception)
                else None
            )
            if message is None:  # a bug (or SystemExit): re-raised, with its traceback
                raise
            status, line = 2, f"error: {message}"
        # The line drops the runner's wrapping (stage names, worker tracebacks); --verbose
        # shows it all.
        logging.getLogger(__name__).debug("the full error", exc_info=True)
        print(f"shardmeans {command}: {line}", file=sys.stderr)
        return status


def run() -> None:
    """The process entry point (the `shardmeans` command, `python -m pipeline`): main(),
    then exit without tearing the interpreter down (private_apis.exit_without_teardown).
    An unexpected exception exits as usual, with its traceback."""
    from pipeline import private_apis

    private_apis.exit_without_teardown(main())


if __name__ == "__main__":
    run()
