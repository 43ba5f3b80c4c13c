"""The `shardmeans` command: `fit`, `score` and `generate` (also `python -m pipeline ...`).

Flags the job does not define go to Beam as pipeline options (`--runner`,
`--direct_num_workers`, `--temp_location`, ...). A user error prints one
readable line and exits with status 2; no traceback.
"""
import argparse
import json
import logging
import os
import re
import sys
from typing import List, Optional

_USAGE = ("usage: shardmeans {fit,score,generate} [FLAGS] "
          "(shardmeans COMMAND --help for the flags)")


def _help_parser(prog: str, option_classes, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog="Any other flag is passed to Beam as a pipeline option, e.g. --runner, "
               "--direct_running_mode=multi_processing --direct_num_workers=2, "
               "--temp_location, --project, --region.")
    for cls in option_classes:
        cls._add_argparse_args(parser.add_argument_group(cls.__doc__.strip().rstrip(".")))
    return parser


def _user_message(error: BaseException) -> Optional[str]:
    """The UserInputError message inside `error`, also when a runner wrapped it in its own."""
    from transforms.errors import UserInputError

    if isinstance(error, UserInputError):
        return str(error)
    match = re.search(r"UserInputError: (.+)", str(error))
    if match is None:
        return None
    return re.sub(r" \[while running .*\]$", "", match.group(1).strip())


def _run_job(command: str, argv: List[str]) -> int:
    """Parse `argv` as pipeline options, build the job's graph, run it, report."""
    from apache_beam.options.pipeline_options import StandardOptions

    from pipeline.options import (InputOptions, KMeansOptions, OutputOptions, ScoreOptions,
                                  ViewCachingOptions)

    if command == "fit":
        classes = (InputOptions, KMeansOptions, OutputOptions)
        description = "Fit K-Means on sharded CSV, Parquet or TFRecord input."
    else:
        classes = (ScoreOptions, InputOptions, OutputOptions)
        description = "Assign the rows of new data to the clusters of a fitted model."
    if "-h" in argv or "--help" in argv:
        _help_parser(f"shardmeans {command}", classes, description).print_help()
        return 0
    import apache_beam as beam

    from pipeline import fit, score, workdir
    from transforms.kmeans_step import resolve_devices

    options = ViewCachingOptions(argv)
    runner = None
    if options.view_as(StandardOptions).runner in (None, "DirectRunner"):
        runner = _local_runner(options)
    # Split the CPU (--devices cpu:N) before anything starts TensorFlow here.
    resolve_devices(options.view_as(KMeansOptions).devices)
    out = options.view_as(OutputOptions)
    if out.output:
        workdir.prepare_output(out.output, out.overwrite)
    pipeline = beam.Pipeline(runner=runner, options=options)
    if command == "fit":
        spec = fit.fit_spec(options)
        fit.build_fit_pipeline(pipeline, spec)
    else:
        spec = score.score_spec(options)
        score.build_score_pipeline(pipeline, spec)
    pipeline.run().wait_until_finish()
    if workdir.is_template_run(options):
        print("wrote a job template; nothing was run")
        return 0
    _print_summary(spec.output)
    return 0


def _local_runner(options):
    """The DirectRunner's batch engine, Beam's FnApiRunner, for a local run.

    Beam's DirectRunner first checks whether Prism (Beam's Go runner) could run
    the job, serializes it and tries to start Prism, downloading its binary where
    the internet is reachable: ~1.4 s of every job here, and a different runner,
    untested with this job, on a machine online. The options reach the SDK
    workers of --direct_running_mode=multi_processing as the DirectRunner passes them.
    """
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def _print_summary(output: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(FileSystems.join(output, "metrics.json")) as f:
        m = json.load(f)
    print(f"rows: {m['rows_read']} read, {m['rows_valid']} valid, {m['rows_rejected']} rejected")
    if "rounds" not in m:  # a score job
        print(f"outputs: {output}/ (assignments/, rejected/, metrics.json)")
        return
    print(f"rounds: {m['rounds']} ({'converged' if m['converged'] else _not_converged(m)}), "
          f"inertia: {m['inertia']:.6g}")
    if m.get("restarts"):
        scores = "".join(f"{k}: {v[m['select']]:.3g}, " if v[m["select"]] is not None else ""
                         for k, v in m.get("sweep", {}).items())
        chosen = (f"K={m['k']} by {m['select']} ({scores.rstrip(', ')}), " if "sweep" in m
                  else f"K={m['k']}, ")
        how = ("on the init sample" if m.get("restarts_on") == "sample"
               else "fitted together over all rows")
        print(f"chosen: {chosen}seed {m['init_seed']}, the best of {len(m['restarts'])} "
              f"starts {how}")
    print(f"cluster sizes: {m['cluster_sizes']}")
    merged = ", hierarchy.json" if "merge_to" in m else ""
    print(f"outputs: {output}/ (model/, transform_fn/, centroids.csv, centroids.npy, "
          f"metrics.json, report.html{merged}, assignments/, rejected/)")


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
    args = parser.parse_args(argv)
    paths = generate.generate(args.output, rows=args.rows, features=args.features,
                              clusters=args.clusters, fmt=args.format, shards=args.shards,
                              seed=args.seed)
    print(f"wrote {args.rows} rows x {args.features} features ({args.clusters} blobs) "
          f"in {len(paths)} {args.format} files under {args.output}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("fit", "score", "generate"):
        print(_USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    # TensorFlow's C++ start-up chatter (no GPU found, oneDNN) is not for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Importing TensorFlow eagerly imports Keras 3's optimizers, and Keras 3 pulls
    # in its scikit-learn wrappers and matplotlib.pyplot: seconds of every run.
    # tf.Transform imports tf_keras anyway, so tf.keras can be tf_keras; nothing
    # in shardmeans uses tf.keras. (Must be set before TensorFlow is imported.)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("tensorflow", "absl", "apache_beam.runners", "apache_beam.io"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Beam logs a failing DoFn's traceback before re-raising; the error reaches
    # main() either way, which prints a user error as one line and re-raises the rest.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    command, rest = argv[0], argv[1:]
    try:
        if command == "generate":
            return _generate(rest)
        return _run_job(command, rest)
    except Exception as e:  # noqa: BLE001 -- only user errors are turned into a message
        message = _user_message(e)
        if message is None:
            raise
        print(f"shardmeans {command}: error: {message}", file=sys.stderr)
        return 2


def run() -> None:
    """The process entry point (the `shardmeans` command, `python -m pipeline`):
    main(), then exit without tearing the interpreter down.

    Unloading TensorFlow, tf.Transform and Beam takes 2-3 s after every job
    (2.2 s measured on 2 cores), once all its outputs are written. What a
    normal exit does before that still happens: non-daemon threads are waited
    for, the exit handlers run (Beam's stop the job services it started), the
    logs and output streams are flushed. An unexpected exception exits as
    usual, with its traceback.
    """
    import atexit
    import threading

    code = main()
    # What a normal exit does first: wait for non-daemon threads, run the exit handlers.
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
