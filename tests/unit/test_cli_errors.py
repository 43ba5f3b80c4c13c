"""The command's own errors (issue #20): unknown and malformed flags, one line instead
of a traceback for what the user causes, Ctrl-C.

- Unknown flags stop fit, score and generate with status 2 and one line naming the
  flag and the closest known one, before anything is read; every flag Beam knows
  is still accepted.
- pipeline.failures classifies the exceptions Beam's runners really raise (built by
  running tiny pipelines whose DoFn raises, in this process; as worker processes
  deliver them, as text; a real multi-process run is in
  tests/integration/test_cli_runs.py).
- Ctrl-C is "interrupted", status 130; a full disk and a refused write are one line
  naming the path; a bug keeps its traceback. The command's jobs are replaced here:
  a SIGINT to a real fit is in tests/integration/test_cli_runs.py.
"""

import argparse
import errno
import logging
import os
import re
import shlex
import subprocess
import sys
import traceback

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner

from pipeline import cli, flags, generate
from pipeline.cli import main
from pipeline.failures import user_message, was_interrupted, without_stage
from pipeline.options import KMeansOptions
from transforms.core.errors import UserInputError

from beam_failures import FULL, RAISED, STAGE, WANTED, as_worker_text, run_failing
from helpers import ROOT


def _one_line(stream: str) -> str:
    lines = stream.strip("\n").splitlines()
    assert len(lines) == 1, stream[-3000:]
    return lines[0]


@pytest.fixture()
def tiny_csv(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,x,y\n" + "".join(f"{i},{i % 7}.5,{i % 3}.25\n" for i in range(40)))
    return str(path)


@pytest.fixture()
def no_job(monkeypatch):
    """Fails the test if a job (or generate's writing) starts."""

    def job(*args, **kwargs):
        raise AssertionError("the job ran")

    monkeypatch.setattr(cli, "_run_job", job)
    monkeypatch.setattr(generate, "generate", job)


# --- unknown and malformed flags -------------------------------------------------


@pytest.mark.parametrize(
    "command, extra, line",
    [
        ("fit", ["--max_round", "2"], "unknown flag --max_round (did you mean --max_rounds?)"),
        ("fit", ["--max_round=2"], "unknown flag --max_round (did you mean --max_rounds?)"),
        ("fit", ["--n-init", "1"], "unknown flag --n-init (did you mean --n_init?)"),
        ("fit", ["--runer", "DirectRunner"], "unknown flag --runer (did you mean --runner?)"),
        ("fit", ["-k", "3"], "unknown flag -k (did you mean --k?)"),
        ("fit", ["--zzyzx"], "unknown flag --zzyzx (shardmeans fit --help lists the flags)"),
        (
            "fit",
            ["--max_round", "2", "--n-init", "1"],
            "unknown flag --max_round (did you mean --max_rounds?); "
            "unknown flag --n-init (did you mean --n_init?)",
        ),
        ("score", ["--modle", "m"], "unknown flag --modle (did you mean --model?)"),
        ("score", ["--ouput_dir", "o"], "unknown flag --ouput_dir (did you mean --output?)"),
    ],
)
def test_unknown_job_flag_is_one_line_before_the_job(
    command, extra, line, tiny_csv, tmp_path, capfd, no_job
):
    out = tmp_path / "out"
    argv = [command, "--input", tiny_csv, "--output", str(out), "--k", "2", *extra]
    if command == "score":
        argv = [
            command,
            "--model",
            str(tmp_path / "model"),
            "--input",
            tiny_csv,
            "--output",
            str(out),
            *extra,
        ]
    assert main(argv) == 2
    captured = capfd.readouterr()
    assert _one_line(captured.err) == f"shardmeans {command}: error: {line}"
    assert captured.out == ""
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, line",
    [
        (["--rowz", "10"], "unknown flag --rowz (did you mean --rows?)"),
        (["--row", "10"], "unknown flag --row (did you mean --rows?)"),  # no abbreviations
        (["--n-clusters", "3"], "unknown flag --n-clusters (did you mean --clusters?)"),
        (["--rows", "ten"], "argument --rows: invalid int value: 'ten'"),
        (["--format", "xls"], "argument --format: invalid choice: 'xls'"),
        (["extra"], "unexpected argument 'extra' (flags are --name value or --name=value)"),
    ],
)
def test_generate_flag_errors_are_one_line(extra, line, tmp_path, capfd, no_job):
    out = tmp_path / "gen"
    assert main(["generate", "--output", str(out), *extra]) == 2
    captured = capfd.readouterr()
    assert _one_line(captured.err).startswith(f"shardmeans generate: error: {line}")
    assert not out.exists()


def test_generate_without_output_is_one_line(capfd, no_job):
    assert main(["generate", "--rows", "10"]) == 2
    assert _one_line(capfd.readouterr().err) == (
        "shardmeans generate: error: the following arguments are required: --output"
    )


@pytest.mark.parametrize(
    "extra, line",
    [
        (["--max_rounds", "abc"], "argument --max_rounds: invalid int value: 'abc'"),
        (["--on_invalid", "skip"], "argument --on_invalid: invalid choice: 'skip'"),
        (["--overwrite=true"], "argument --overwrite: ignored explicit argument 'true'"),
        (["--max_rounds"], "argument --max_rounds: expected one argument"),
        (
            ["--experiments", "a", "b"],  # one value per flag, as Beam parses it
            "unexpected argument 'b' (flags are --name value or --name=value)",
        ),
        (
            ["--sdk_harness_log_level_overrides", "1"],  # a Beam action that raises TypeError
            "argument --sdk_harness_log_level_overrides 1: TypeError: 'int' object is not iterable",
        ),
    ],
)
def test_malformed_job_flag_is_one_line(extra, line, tiny_csv, tmp_path, capfd, no_job):
    assert (
        main(["fit", "--input", tiny_csv, "--output", str(tmp_path / "out"), "--k", "2", *extra])
        == 2
    )
    assert _one_line(capfd.readouterr().err).startswith(f"shardmeans fit: error: {line}")


def test_unknown_flag_in_a_real_process_is_one_line(tiny_csv, tmp_path):
    """The whole command: nothing else on stderr (no Beam warning, no TensorFlow
    start-up lines: the check runs before TensorFlow is imported), nothing written."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "fit",
            "--input",
            tiny_csv,
            "--output",
            str(out),
            "--k",
            "2",
            "--max_round",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _one_line(proc.stderr) == (
        "shardmeans fit: error: unknown flag --max_round (did you mean --max_rounds?)"
    )
    assert proc.stdout == "" and not out.exists()


def test_beam_itself_drops_a_mistyped_flag():
    """Why the check exists: Beam keeps the default and only warns (no abbreviations
    either: --max_round is not taken for --max_rounds)."""
    options = PipelineOptions(["--max_round", "2"])
    assert options.view_as(KMeansOptions).max_rounds == 30


# Real Beam flags, as launch/ and the docs pass them; each must be accepted by Beam
# (no "Discarding unparseable args") and by the check.
BEAM_FLAGS = [
    ["--runner", "DirectRunner"],
    ["--runner=DataflowRunner"],
    ["--runner", "FlinkRunner"],
    ["--runner=SparkRunner"],
    ["--runner", "PortableRunner"],
    ["--runner=PrismRunner"],
    ["--direct_num_workers", "2"],
    ["--direct_num_workers=0"],
    ["--direct_running_mode=multi_processing"],
    ["--direct_running_mode", "multi_threading"],
    ["--temp_location", "gs://b/shardmeans/temp"],
    ["--staging_location=gs://b/staging"],
    ["--project", "my-project"],
    ["--region=europe-west1"],
    ["--job_name", "shardmeans-1"],
    ["--sdk_container_image", "europe-docker.pkg.dev/p/r/shardmeans:1"],
    ["--template_location", "gs://b/templates/fit.json"],
    ["--experiments", "no_use_multiple_sdk_containers"],
    ["--experiments=a,b", "--experiments=c"],
    ["--experiment", "use_runner_v2"],
    ["--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"],
    ["--flink_master", "localhost:8081"],
    ["--flink_master=[local]"],
    ["--flink_version=1.19"],
    ["--flink_job_server_jar", "/jars/flink.jar"],
    ["--flink_submit_uber_jar"],
    ["--parallelism", "4"],
    ["--max_parallelism=8"],
    ["--spark_master_url", "spark://host:7077"],
    ["--spark_submit_uber_jar"],
    ["--spark_rest_url=http://host:6066"],
    ["--spark_job_server_jar", "/jars/spark.jar"],
    ["--job_endpoint", "localhost:8099"],
    ["--job_endpoint=embed"],
    ["--artifact_endpoint", "localhost:8098"],
    ["--environment_type", "LOOPBACK"],
    ["--environment_type=EXTERNAL", "--environment_config=localhost:50000"],
    ["--environment_type=DOCKER", "--environment_config=apache/beam_python3.11_sdk:2.77.0"],
    ["--environment_options=process_command=/opt/apache/beam/boot"],
    ["--sdk_worker_parallelism", "2"],
    ["--job_server_timeout", "60"],
    ["--job-server-timeout=60"],
    ["--prism_location", "/bin/prism"],
    ["--render_output", "graph.svg"],
    ["--render_port=0"],  # RenderRunner's, its own module
    ["--setup_file", "./setup.py"],
    ["--requirements_file=requirements.txt"],
    ["--extra_package", "dist/x.tar.gz"],
    ["--save_main_session"],
    ["--no_save_main_session"],
    ["--pickle_library=cloudpickle"],
    ["--sdk_location", "container"],
    ["--machine_type", "n1-standard-4"],
    ["--worker_machine_type=n1-highmem-8"],
    ["--num_workers", "3"],
    ["--max_num_workers=10"],
    ["--autoscaling_algorithm", "NONE"],
    ["--disk_size_gb", "100"],
    ["--network", "default"],
    ["--subnetwork=regions/europe-west1/subnetworks/s"],
    ["--no_use_public_ips"],
    ["--use_public_ips"],
    ["--worker_zone", "europe-west1-b"],
    ["--service_account_email=sa@p.iam.gserviceaccount.com"],
    ["--labels", "team=ml"],
    ["--label=owner=me"],
    ["--no_auth"],
    ["--impersonate_service_account", "sa@p.iam.gserviceaccount.com"],
    ["--dataflow_endpoint=https://dataflow.googleapis.com"],
    ["--update"],
    ['--transform_name_mapping={"a": "b"}'],
    ["--flexrs_goal", "COST_OPTIMIZED"],
    ["--enable_streaming_engine"],
    ["--dataflow_kms_key=k"],
    ["--streaming"],
    ["--type_check_strictness=ALL_REQUIRED"],
    ["--runtime_type_check"],
    ["--no_pipeline_type_check"],
    ["--profile_cpu"],
    ["--profile_location", "/tmp/profiles"],
    ["--hdfs_host", "namenode"],
    ["--s3_region_name=us-east-1"],
    ["--default_sdk_harness_log_level", "DEBUG"],
    ["--sdk_harness_log_level_overrides", '{"apache_beam": "INFO"}'],
    ["--beam_services={}"],
    ["--resource_hints", "min_ram=4GB"],
    ["--number_of_worker_harness_threads", "4"],
    ["--max_cache_memory_usage_mb=0"],
    # shardmeans' own, next to Beam's
    ["--k", "4,8", "--n_init=2", "--devices", "cpu:2", "--seed", "-1", "--tol=-1e-4"],
    ["--model", "out/model", "--overwrite", "--keep_standardized"],
]


@pytest.mark.parametrize("argv", BEAM_FLAGS, ids=lambda argv: " ".join(argv)[:60])
def test_real_beam_flags_are_accepted(argv, caplog):
    flags.check_job_flags(argv, "shardmeans fit")
    with caplog.at_level(logging.WARNING):
        PipelineOptions(argv).get_all_options()
    assert "Discarding unparseable args" not in caplog.text, argv


def _a_value(action) -> str:
    """A value `action` takes, from its choices, or the first of a few its type accepts."""
    if action.choices:
        return str(next(iter(action.choices)))
    for candidate in ('{"k": "INFO"}', "1"):  # JSON objects first: the dict flags
        try:
            if action.type:
                action.type(candidate)
            return candidate
        except Exception:  # noqa: BLE001 -- try the next
            continue
    raise AssertionError(f"no value for {action.option_strings}")


def test_every_flag_beam_defines_is_accepted():
    """Each flag of every registered PipelineOptions class (Beam's, the runners', ours),
    as --flag, --flag value and --flag=value."""
    parser = flags.pipeline_options_parser()
    refused, seen = [], 0
    for action in parser._actions:
        for option in action.option_strings:
            seen += 1
            value = None if action.nargs == 0 else _a_value(action)
            forms = [[option]] if value is None else [[option, value], [f"{option}={value}"]]
            for argv in forms:
                try:
                    flags.check_job_flags(argv, "shardmeans fit")
                except flags.FlagError as e:
                    refused.append((argv, str(e)))
    assert refused == []
    assert seen > 150  # Beam 2.77 defines ~180; shardmeans ~25


def test_closest_flag():
    known = ["--max_rounds", "--n_init", "--k", "--runner", "--job-server-timeout"]
    assert flags.closest_flag("--max_round", known) == "--max_rounds"
    assert flags.closest_flag("--N-INIT", known) == "--n_init"
    assert flags.closest_flag("--job_server_timeout", known) == "--job-server-timeout"
    assert flags.closest_flag("--completely-different", known) is None


def test_flag_value():
    assert flags.flag_value(["--output", "a", "--k", "2"], "--output") == "a"
    assert flags.flag_value(["--output=a", "--output=b"], "--output") == "b"
    assert flags.flag_value(["--output_dir", "a"], "--output") is None


# --- help ----------------------------------------------------------------------------


def test_generate_help_explains_every_flag(capsys):
    parser = generate.arg_parser()
    assert all(action.help for action in parser._actions), [
        action.option_strings for action in parser._actions if not action.help
    ]
    assert main(["generate", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in (
        "--output",
        "--rows",
        "--features",
        "--dtype",
        "--clusters",
        "--format",
        "--shards",
        "--seed",
        "--verbose",
    ):
        assert flag in text
    for action in parser._actions:  # each default stated, the required flag said so
        if action.default not in (None, False, argparse.SUPPRESS):
            assert f"default {action.default}" in action.help, action.option_strings
        if action.required:
            assert "(required)" in action.help, action.option_strings
    # The example fit of the epilog is one the command takes.
    example = next(line for line in text.splitlines() if line.strip().startswith("shardmeans fit"))
    flags.check_job_flags(shlex.split(example)[2:], "shardmeans fit")


def test_version_and_the_commands(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"shardmeans {version('shardmeans')}\n"
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("fit", "score", "generate"):
        assert re.search(rf"^  {command} +\S", text, re.M), text
    assert main(["fitt"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: shardmeans") and err[-1] == (
        "shardmeans: error: unknown command 'fitt'"
    )


def test_fit_help_lists_verbose_and_says_unknown_flags_stop(capsys):
    assert main(["fit", "--help", "--not_a_flag"]) == 0  # --help wins, nothing checked
    text = " ".join(capsys.readouterr().out.split())
    assert "--verbose" in text and "Any other flag stops the command" in text


# --- how Beam's runners deliver a worker's exception ---------------------------------


@pytest.fixture(scope="module")
def in_process():
    """The exceptions of the local run's runner, Beam's FnApiRunner in this process."""
    quiet = logging.getLogger("apache_beam.runners.common")
    level, quiet.level = quiet.level, logging.CRITICAL  # its log of each DoFn's traceback
    try:
        return {
            kind: run_failing(what, runner=fn_runner.FnApiRunner()) for kind, what in RAISED.items()
        }
    finally:
        quiet.setLevel(level)


def test_in_process_shapes_are_what_beam_produces(in_process):
    """The shapes failures.py expects, from the real runner (Beam 2.77)."""
    user = in_process["user"]
    assert isinstance(user, UserInputError)
    assert str(user) == f"{WANTED['user']} [while running '{STAGE}']"
    full = in_process["full_disk"]
    assert type(full) is RuntimeError and isinstance(full.__context__, OSError)
    assert (
        str(full)
        == f"OSError: [Errno 28] No space left on device: '{FULL}' [while running '{STAGE}']"
    )
    interrupted = in_process["interrupt"]
    assert type(interrupted) is RuntimeError
    assert str(interrupted) == f"KeyboardInterrupt [while running '{STAGE}']"


@pytest.mark.parametrize("kind", list(RAISED))
def test_classifier_on_in_process_errors(in_process, kind):
    assert user_message(in_process[kind]) == WANTED[kind]
    assert was_interrupted(in_process[kind]) == (kind == "interrupt")


@pytest.mark.parametrize(
    "prefix",
    [
        "",  # --direct_running_mode=multi_processing, a worker pool
        "Pipeline job-1f0 failed in state FAILED: Error running pipeline.\n",  # a portable job
    ],
)
@pytest.mark.parametrize("kind", list(RAISED))
def test_classifier_on_worker_text(in_process, kind, prefix):
    """Text only: the exception objects stayed in the worker's process."""
    wrapped = as_worker_text(in_process[kind], prefix)
    assert "[while running" in str(wrapped) and "\n" in str(wrapped)
    assert user_message(wrapped) == WANTED[kind]
    assert was_interrupted(wrapped) == (kind == "interrupt")


def test_stage_names_are_trimmed_wherever_they_are():
    assert without_stage("bad [while running 'A/B (x)'] more") == "bad more"
    assert without_stage("bad [while running 'A'] [while running 'B']") == "bad"
    assert without_stage("column 'x' [0, 9]: bad") == "column 'x' [0, 9]: bad"
    text = (
        f"boom\ntransforms.core.errors.UserInputError: bad value [while running '{STAGE}']\n\nmore"
    )
    assert user_message(RuntimeError(text)) == "bad value"


def test_full_disk_without_a_path_names_the_output():
    error = OSError(
        errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device"
    )  # pyarrow's
    assert user_message(error, output="/data/out") == (
        "no space left on device (the error names no path; the job writes under /data/out)"
    )
    tf_style = RuntimeError("/data/out/x; No space left on device")  # words, no errno
    assert user_message(tf_style).startswith("no space left on device (")


# --- the command: one line, or the traceback of a bug ---------------------------------


@pytest.mark.parametrize("kind", ["user", "full_disk", "denied", "read_only"])
@pytest.mark.parametrize("delivery", ["in_process", "worker_text"])
def test_command_prints_one_line(in_process, kind, delivery, monkeypatch, tmp_path, capfd):
    error = in_process[kind] if delivery == "in_process" else as_worker_text(in_process[kind])

    def job(command, argv):
        raise error

    monkeypatch.setattr(cli, "_run_job", job)
    assert main(["fit", "--input", "x.csv", "--output", str(tmp_path / "out"), "--k", "2"]) == 2
    assert _one_line(capfd.readouterr().err) == f"shardmeans fit: error: {WANTED[kind]}"


def test_command_keeps_the_traceback_of_a_bug(in_process, monkeypatch, tmp_path):
    def job(command, argv):
        raise in_process["bug"]

    monkeypatch.setattr(cli, "_run_job", job)
    with pytest.raises(ZeroDivisionError, match="while running"):
        main(["fit", "--input", "x.csv", "--output", str(tmp_path / "out"), "--k", "2"])


@pytest.mark.parametrize("raised", ["bare", "in_a_dofn", "in_a_worker"])
def test_ctrl_c_is_one_line_and_130(in_process, raised, monkeypatch, tmp_path, capfd):
    error = {
        "bare": KeyboardInterrupt(),
        "in_a_dofn": in_process["interrupt"],
        "in_a_worker": as_worker_text(in_process["interrupt"]),
    }[raised]

    def job(command, argv):
        raise error

    monkeypatch.setattr(cli, "_run_job", job)
    assert main(["fit", "--input", "x.csv", "--output", str(tmp_path / "out"), "--k", "2"]) == 130
    assert _one_line(capfd.readouterr().err) == "shardmeans fit: interrupted"


def test_ctrl_c_in_generate(monkeypatch, tmp_path, capfd):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt()

    monkeypatch.setattr(generate, "generate", interrupted)
    assert main(["generate", "--output", str(tmp_path / "gen")]) == 130
    assert _one_line(capfd.readouterr().err) == "shardmeans generate: interrupted"


# --- a real refused write, end to end (generate: no Beam job needed) ------------------


def test_refused_write_is_one_line(tmp_path, capfd):
    """A directory in sysfs cannot be created, even by root: EPERM or EACCES (or EROFS
    where /sys is mounted read-only)."""
    target = "/sys/shardmeans-test-cannot-write-here"
    assert not os.path.exists(target)  # sysfs holds only what the kernel puts there
    assert main(["generate", "--output", target, "--rows", "10", "--shards", "1"]) == 2
    line = _one_line(capfd.readouterr().err)
    assert line in {
        f"shardmeans generate: error: {os.strerror(code).lower()}: {target}"
        for code in (errno.EPERM, errno.EACCES, errno.EROFS)
    }, line


@pytest.fixture()
def restore_logging():
    root = logging.getLogger()
    names = (
        "tensorflow",
        "absl",
        "apache_beam",
        "apache_beam.runners",
        "apache_beam.io",
        "apache_beam.runners.common",
    )
    levels = root.level, {name: logging.getLogger(name).level for name in names}
    yield
    root.setLevel(levels[0])
    for name, level in levels[1].items():
        logging.getLogger(name).setLevel(level)


def test_verbose_logs_the_full_error_and_never_reaches_beam(
    monkeypatch, tmp_path, capfd, caplog, in_process, restore_logging
):
    seen = {}

    def job(command, argv):
        seen["argv"] = argv
        raise in_process["full_disk"]

    monkeypatch.setattr(cli, "_run_job", job)
    with caplog.at_level(logging.DEBUG):
        assert (
            main(
                [
                    "fit",
                    "--verbose",
                    "--input",
                    "x.csv",
                    "--output",
                    str(tmp_path / "o"),
                    "--k",
                    "2",
                ]
            )
            == 2
        )
    assert "--verbose" not in seen["argv"]
    # not quieted: Beam's log of a failing DoFn's traceback shows too
    assert logging.getLogger("apache_beam.runners.common").level == logging.NOTSET
    assert _one_line(capfd.readouterr().err) == f"shardmeans fit: error: {WANTED['full_disk']}"
    logged = [r for r in caplog.records if r.name == "pipeline.cli" and r.exc_info]
    assert logged and f"[while running '{STAGE}']" in "".join(
        traceback.format_exception(*logged[0].exc_info)
    )


def test_generate_writes_the_dtype_asked_for(tmp_path):
    import pyarrow.parquet as pq

    for dtype, arrow in (("float32", "float"), ("float64", "double")):
        out = tmp_path / dtype
        assert main(["generate", "--output", str(out), "--rows", "50", "--dtype", dtype]) == 0
        schema = pq.read_schema(sorted(out.glob("*.parquet"))[0])
        assert str(schema.field("f0").type) == arrow
