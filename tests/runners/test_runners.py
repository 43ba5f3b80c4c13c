"""Other runners than the DirectRunner, and the launch/ files that start them.

- the portable runner: a local job service and an EXTERNAL SDK worker pool, the Fn API
  path of Flink, Spark and Dataflow Runner v2, give the DirectRunner's centroids;
- Dataflow, offline: a job template is written, nothing is submitted, and the staged
  package holds pipeline/ and transforms/, every sub-package and the op's source;
- launch/: the versions agree with setup.py's pins, the scripts parse and build the
  Beam flags they document (which the command's flag check accepts), the Flex
  Template metadata validates the CLI's values.
"""

import ast
import glob
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from pipeline import flags

from helpers import (
    ROOT,
    assignments,
    centroids,
    fit,
    fit_subprocess,
    metrics,
    scaled_blobs,
    write_shards,
)

K = 3
SEED = 7
# No refinement on the init sample: the rounds on each runner do the Lloyd work (3 to converge).
FIT_ARGS = (
    "--k",
    K,
    "--id_column",
    "id",
    "--seed",
    SEED,
    "--init_refine_rounds",
    0,
    "--max_rounds",
    10,
)
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = sorted(glob.glob(os.path.join(LAUNCH, "*.sh")))
PIN_NAMES = ("BEAM_VERSION", "TENSORFLOW_VERSION", "TFT_VERSION")


def _pins() -> dict:
    """BEAM_VERSION, TENSORFLOW_VERSION, TFT_VERSION as assigned in setup.py."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    pins = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in PIN_NAMES
    }
    assert set(pins) == set(PIN_NAMES), f"setup.py must assign {PIN_NAMES}, found {pins}"
    return pins


def _same_as_direct(out, reference):
    np.testing.assert_allclose(centroids(out), reference[0], rtol=1e-5, atol=1e-6)
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (2000, 2000, 0)
    assert m["inertia"] == pytest.approx(reference[1]["inertia"], rel=1e-6)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """2000 rows x 4 features, 3 overlapping blobs, in 3 Parquet shards."""
    table = scaled_blobs(2000, 4, K, seed=21, cluster_std=2.0)
    return write_shards(table, tmp_path_factory.mktemp("runner_input"), "parquet", shards=3)


@pytest.fixture(scope="module")
def direct(blobs, tmp_path_factory):
    """The DirectRunner's centroids and metrics for `blobs`."""
    out = tmp_path_factory.mktemp("direct") / "out"
    assert fit(out, "--input", blobs, *FIT_ARGS) == 0
    m = metrics(out)
    assert m["converged"] and m["rounds"] > 1, "the rounds should do Lloyd work, and finish"
    return centroids(out), m


# -- the portable runner ---------------------------------------------------------------


def _free_ports(n: int):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:  # all held open at once: n distinct ports
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("localhost", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_listening(name, port, proc, log, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not _listening(port):
        if proc.poll() is not None:
            pytest.fail(
                f"the {name} exited with {proc.returncode} before listening on "
                f"{port}:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"the {name} is not listening on localhost:{port} after {timeout:.0f}s:"
                f"\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.2)


def _stop(proc):
    """End `proc` and its process group (the worker pool's SDK workers too)."""
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind by the leader
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    """A Beam job service and an EXTERNAL SDK worker pool on free localhost ports.

    The worker pool starts every SDK worker as a bare `python`: the venv's bin comes first
    on PATH, and PYTHONPATH makes the workers import this checkout, like the job."""
    logs = tmp_path_factory.mktemp("portable_logs")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    resolved = subprocess.run(
        ["python", "-c", "import sys; print(sys.prefix)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert resolved == sys.prefix, f"`python` on the workers' PATH is {resolved}, not {sys.prefix}"

    job_port, pool_port = _free_ports(2)
    procs = []
    try:
        for name, module, flag, port in (
            (
                "job service",
                "apache_beam.runners.portability.local_job_service_main",
                "--port",
                job_port,
            ),
            (
                "worker pool",
                "apache_beam.runners.worker.worker_pool_main",
                "--service_port",
                pool_port,
            ),
        ):
            log = logs / f"{name.replace(' ', '_')}.log"
            with open(log, "w") as f:
                proc = subprocess.Popen(
                    ["python", "-m", module, flag, str(port)],
                    cwd=ROOT,
                    env=env,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append(proc)
            _wait_listening(name, port, proc, log)
        yield job_port, pool_port, logs
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _detached_line(proc, out, command: str) -> dict:
    """The one JSON line a detached run prints on stdout, checked against `out`."""
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # the human lines are on stderr
    record = json.loads(lines[0])
    assert set(record) == {"command", "run_id", "job_id", "runner", "output", "marker"} | {
        "lock",
        "stage",
    }
    assert record["command"] == command and record["runner"] == "PortableRunner"
    assert record["job_id"] not in (None, "None"), record
    assert record["output"] == str(out) and record["marker"] == f"{out}/_SUCCESS"
    assert record["lock"] == f"{out}.shardmeans-lock"
    assert record["stage"].startswith(f"{out}.") and record["run_id"] in record["stage"]
    return record


def _wait_for(marker, seconds=300):
    """The marker's JSON once it appears (the job published), polled each second."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(1)
    with open(marker) as f:
        return json.load(f)


def test_detach_submits_prints_the_job_and_returns(blobs, direct, portable_services, tmp_path):
    """--detach on the portable runner, fit then score: the command returns once the job
    is submitted (before it ends: no marker yet, the job holds the lock), prints one JSON
    line naming the job and its marker, and the people's lines on stderr; the job
    publishes its outputs by itself, and the marker names the run."""
    job_port, pool_port, _ = portable_services
    portable = (
        "--detach",
        "--runner=PortableRunner",
        f"--job_endpoint=localhost:{job_port}",
        "--environment_type=EXTERNAL",
        f"--environment_config=localhost:{pool_port}",
    )
    out = tmp_path / "out"
    proc = fit_subprocess(out, "--input", blobs, *FIT_ARGS, *portable, timeout=400)
    assert proc.returncode == 0, proc.stderr[-5000:]
    record = _detached_line(proc, out, "fit")
    assert not (out / "_SUCCESS").exists() and os.path.exists(record["lock"]), (
        "--detach waited for the job"
    )
    assert re.search(
        rf"^submitted run {record['run_id']} to PortableRunner: job {record['job_id']}$",
        proc.stderr,
        re.M,
    ), proc.stderr
    assert f"follow it: the job service at localhost:{job_port}" in proc.stderr
    assert f"outputs: {out}/ once the job has published them" in proc.stderr
    assert "rounds:" not in proc.stdout + proc.stderr  # no summary: nothing was waited for
    assert _wait_for(record["marker"])["run_id"] == record["run_id"]
    _same_as_direct(out, direct)
    assert not glob.glob(str(out) + ".*"), "the job left its lock or its stage"

    scored = tmp_path / "scored"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "score", "--model", str(out), "--input", blobs]
        + ["--output", str(scored), "--id_column", "id", *portable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    record = _detached_line(proc, scored, "score")
    assert _wait_for(record["marker"])["run_id"] == record["run_id"]
    np.testing.assert_array_equal(
        assignments(scored).column("cluster_id"), assignments(out).column("cluster_id")
    )
    assert metrics(scored)["drift"]["warning"] is None
    assert not glob.glob(str(scored) + ".*"), "the job left its lock or its stage"


def test_portable_script_end_to_end(blobs, direct, tmp_path):
    """launch/portable.sh with relative paths: starts both services, runs the fit there
    (the DirectRunner's centroids, its phase and round lines on this console), and stops
    them; then a score the same way. (--detach, on services started by hand: below.)"""
    os.symlink(os.path.dirname(blobs), tmp_path / "in")
    env = dict(
        os.environ,
        SHARDMEANS_PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
        TMPDIR=str(tmp_path),
    )
    proc = subprocess.run(
        [
            os.path.join(LAUNCH, "portable.sh"),
            "--input",
            "in/*.parquet",
            "--output",
            "out",
            *map(str, FIT_ARGS),
        ],
        cwd=tmp_path,
        env=dict(env, SHARDMEANS_KEEP_LOGS="1"),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    _same_as_direct(tmp_path / "out", direct)
    ports = re.search(
        r"job service on localhost:(\d+), worker pool on localhost:(\d+)", proc.stderr
    )
    assert ports, proc.stderr[-3000:]
    assert not any(_listening(int(p)) for p in ports.groups()), "a service outlived the script"
    # The phases and rounds reach this console, from the job's metrics (pipeline.progress):
    # Beam's local job service reports them once the job has ended.
    rounds = metrics(tmp_path / "out")["rounds"]
    for line in (
        "running on PortableRunner: reading and validating 3 files",
        "reading and validating: 3 of 3 files, 2000 rows read, 2000 valid, 0 rejected (",
        "analysing: done (tf.Transform), init sample of 2000 rows (",
        "sampling and initialising: 4 starts on the init sample, 1 fitted over all rows (",
        f"round {rounds} of 10: inertia ",
        "final pass: 2000 rows assigned (",
        "writing: centroids, metrics.json and report.html written; publishing (",
    ):
        assert f"progress: {line}" in proc.stderr, (line, proc.stderr[-5000:])
    assert re.search(r"progress: round 1 of 10: .* elapsed, at most 9 rounds left", proc.stderr)
    # It really ran there: the job service ran the job, the pool started `python` workers
    # (their logs kept, SHARDMEANS_KEEP_LOGS).
    (logs,) = glob.glob(str(tmp_path / "shardmeans-portable.*"))
    assert f"service logs kept in {logs}" in proc.stderr
    logs = Path(logs)
    assert "with state DONE" in (logs / "job_service.log").read_text()
    assert "Starting worker with command ['python'" in (logs / "worker_pool.log").read_text()

    # Any command, named first: score the fit's model there too.
    args = ["score", "--model", "out", "--input", "in/*.parquet", "--output", "scored"]
    proc = subprocess.run(
        [os.path.join(LAUNCH, "portable.sh"), *args, "--id_column", "id", "--top_n", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "running on PortableRunner" in proc.stderr, proc.stderr[-3000:]
    scored, fitted = assignments(tmp_path / "scored"), assignments(tmp_path / "out")
    np.testing.assert_array_equal(scored.column("cluster_id"), fitted.column("cluster_id"))
    assert str(scored.schema.field("nearest_cluster_ids").type) == "list<item: int64>"
    assert (tmp_path / "scored" / "report.html").exists()
    assert glob.glob(str(tmp_path / "shardmeans-portable.*")) == [str(logs)], "left its work dir"


def test_portable_script_refuses_a_python_without_the_job(tmp_path):
    """The workers' `python` must be able to import the job, or the script stops early."""
    isolated = tmp_path / "isolated-python"
    isolated.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -S "$@"\n')
    isolated.chmod(0o755)
    proc = subprocess.run(
        [os.path.join(LAUNCH, "portable.sh"), "--input", "x", "--output", "y", "--k", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, SHARDMEANS_PYTHON=str(isolated), TMPDIR=str(tmp_path)),
        timeout=60,
    )
    assert proc.returncode == 2
    assert not glob.glob(str(tmp_path / "shardmeans-portable.*")), "left its work directory"
    assert "cannot import the job" in proc.stderr and "SHARDMEANS_PYTHON" in proc.stderr


def test_portable_script_refuses_detach(tmp_path):
    """The script stops its services when the command returns: a detached job would die."""
    proc = subprocess.run(
        [os.path.join(LAUNCH, "portable.sh"), "--input", "x", "--output", "y", "--detach"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
        timeout=60,
    )
    assert proc.returncode == 2 and "--detach" in proc.stderr, proc.stderr
    assert not glob.glob(str(tmp_path / "shardmeans-portable.*")), "left its work directory"


# -- Dataflow, offline -----------------------------------------------------------------


def test_dataflow_writes_a_template_and_stages_the_package(blobs, tmp_path):
    temp, staging, template = tmp_path / "temp", tmp_path / "staging", tmp_path / "job.json"
    temp.mkdir()
    staging.mkdir()
    proc = fit_subprocess(
        tmp_path / "out",
        "--input",
        blobs,
        *FIT_ARGS,
        "--runner=DataflowRunner",
        "--project=demo-project",
        "--region=us-central1",
        "--dataflow_endpoint=http://localhost:1",
        "--no_auth",
        f"--temp_location={temp}",
        f"--staging_location={staging}",
        f"--template_location={template}",
        f"--setup_file={ROOT}/setup.py",
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "wrote a job template; nothing was run" in proc.stdout
    assert not (tmp_path / "out" / "metrics.json").exists()

    with open(template) as f:
        job = json.load(f)
    assert job["type"] == "JOB_TYPE_BATCH"
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert (options["project"], options["region"]) == ("demo-project", "us-central1")
    assert (options["input"], int(options["k"]), options["setup_file"]) == (
        blobs,
        K,
        f"{ROOT}/setup.py",
    )
    # Runner v2 keeps the steps in the staged pipeline proto the template points to.
    from apache_beam.portability.api import beam_runner_api_pb2

    pipeline = beam_runner_api_pb2.Pipeline()
    with open(options["pipelineUrl"], "rb") as f:
        pipeline.ParseFromString(f.read())
    steps = {t.unique_name for t in pipeline.components.transforms.values()}
    assert {"Read", "KMeans", "WriteAssignments", "WriteResults"} <= steps

    tarball = staging / "workflow.tar.gz"
    with tarfile.open(tarball) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    for package in ("pipeline", "transforms"):  # every sub-package, and the op's source
        modules = {
            os.path.relpath(p, ROOT)
            for pattern in ("*.py", "*.cc")
            for p in glob.glob(os.path.join(ROOT, package, "**", pattern), recursive=True)
        }
        assert modules and modules <= members, f"{tarball} lacks {sorted(modules - members)}"
    assert "transforms/step/native/nearest_centroids.cc" in members
    # tf.Transform's temp dir is under the (local) --temp_location: built offline.
    assert glob.glob(str(temp / "shardmeans-*" / "tft"))


# -- versions --------------------------------------------------------------------------


def test_installed_versions_are_the_pinned_ones():
    pins = _pins()
    import apache_beam
    import tensorflow
    import tensorflow_transform

    assert apache_beam.__version__ == pins["BEAM_VERSION"] == metadata.version("apache-beam")
    assert tensorflow.__version__ == pins["TENSORFLOW_VERSION"] == metadata.version("tensorflow")
    assert (
        tensorflow_transform.__version__
        == pins["TFT_VERSION"]
        == metadata.version("tensorflow-transform")
    )


def test_dockerfile_builds_the_pinned_versions():
    pins = _pins()
    with open(os.path.join(LAUNCH, "Dockerfile")) as f:
        text = f.read()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert {name: args.get(name) for name in PIN_NAMES} == pins
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert "apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in froms
    # The launcher is a dated release, never a moving tag.
    assert re.fullmatch(
        r"gcr\.io/dataflow-templates-base/python311-template-launcher-base:"
        r"flex_templates_base_image_release_\d{8}_RC\d\d",
        args["LAUNCHER_IMAGE"],
    ), args["LAUNCHER_IMAGE"]
    for requirement in (
        "apache-beam[gcp]==${BEAM_VERSION}",
        "tensorflow[and-cuda]==${TENSORFLOW_VERSION}",
        "tensorflow-transform==${TFT_VERSION}",
    ):
        assert requirement in text
    assert re.search(r"^COPY setup\.py ", text, re.M)
    assert re.search(r"^COPY pipeline ", text, re.M) and re.search(r"^COPY transforms ", text, re.M)
    assert "pip install --no-cache-dir ." in text


def test_launch_files_state_no_other_version():
    """Scripts read the versions from setup.py; wherever launch/ names one, it is the pin."""
    pins = set(_pins().values())
    for path in sorted(glob.glob(os.path.join(LAUNCH, "**", "*"), recursive=True)):
        if os.path.isdir(path) or "__pycache__" in path:  # (launch/airflow/: its files)
            continue
        with open(path) as f:
            text = f.read()
        if path.endswith(".sh"):
            assert not pins & set(re.findall(r"\d+\.\d+\.\d+", text)), (
                f"{path} hard-codes a pinned version; read it from setup.py"
            )
        stray = set(re.findall(r"(?<![\w.])\d+\.\d+\.\d+(?![\w.])", text)) - pins
        assert not stray, f"{path} names versions {sorted(stray)} that setup.py does not pin"


# -- the launch scripts ----------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_script_parses_and_is_documented(script):
    subprocess.run(["bash", "-n", script], check=True)
    with open(script) as f:
        lines = f.read().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    header = []
    for line in lines[1:]:
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 2 and "Usage: launch/" in "\n".join(header), script
    assert "set -euo pipefail" in lines
    assert os.access(script, os.X_OK), f"{script} is not executable"


def _fresh_clone(tmp_path):
    """A checkout as `make install` leaves it: launch/, setup.py and .venv/ (this
    test's venv: the interpreter running these tests, which has shardmeans installed)."""
    clone = tmp_path / "clone"
    clone.mkdir()
    subprocess.run(["cp", "-a", LAUNCH, str(clone / "launch")], check=True)
    subprocess.run(["cp", os.path.join(ROOT, "setup.py"), str(clone)], check=True)
    os.symlink(sys.prefix, clone / ".venv")
    assert os.access(clone / ".venv" / "bin" / "shardmeans", os.X_OK), "tests run from a venv"
    return clone


def _without_the_venv_on_path() -> dict:
    """This environment, with no `shardmeans` (and no venv of it) on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("SHARDMEANS_PYTHON", "VIRTUAL_ENV")}
    path = [
        d
        for d in env.get("PATH", "").split(os.pathsep)
        if d and not os.path.exists(os.path.join(d, "shardmeans"))
    ]
    env["PATH"] = os.pathsep.join(path or ["/usr/bin", "/bin"])
    return env


def test_local_script_from_a_fresh_clone(blobs, tmp_path):
    """After `make demo` nothing is on PATH: launch/local.sh finds the checkout's .venv."""
    clone = _fresh_clone(tmp_path)
    env = _without_the_venv_on_path()
    proc = subprocess.run(
        [
            str(clone / "launch" / "local.sh"),
            "--input",
            blobs,
            "--output",
            "out",
            "--k",
            "2",
            "--n_init",
            "1",
            "--init_refine_rounds",
            "0",
            "--max_rounds",
            "2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert metrics(tmp_path / "out")["k"] == 2
    # What every launcher would run: the clone's .venv, found beside launch/, and the
    # command named first (fit without one).
    python = str(clone / ".venv" / "bin" / "python")
    for script, args in [
        ("local.sh", ["--workers", "2"]),
        ("flink.sh", ["--flink_master", "jm:8081"]),
        ("dataflow.sh", ["p", "us-central1", "b"]),
    ]:
        for command in ([], ["score"], ["another_command"]):
            printed = subprocess.run(
                [str(clone / "launch" / script), *command, *args, "--input", "x", "--output", "y"],
                env=dict(env, SHARDMEANS_DRY_RUN="1"),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert printed.returncode == 0, (script, printed.stderr)
            want = [python, "-m", "pipeline", *(command or ["fit"])]
            assert shlex.split(printed.stdout)[:4] == want, printed.stdout
            assert shlex.split(printed.stdout)[-4:] == ["--input", "x", "--output", "y"]
    bad = subprocess.run(
        [str(clone / "launch" / "local.sh"), "Fit!", "--input", "x"],
        env=dict(env, SHARDMEANS_DRY_RUN="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "'Fit!' is not a shardmeans command" in bad.stderr
    # Without the venv, and nothing on PATH: one line saying what to do.
    os.unlink(clone / ".venv")
    proc = subprocess.run(
        [str(clone / "launch" / "local.sh"), "--input", "x", "--output", "y", "--k", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "run make install" in proc.stderr, proc.stderr


def _dry_run(script, *args, command="fit"):
    """The command `script` would run (`command`: the one it must name), parsed as the
    job's and Beam's options."""
    from apache_beam.options.pipeline_options import PipelineOptions

    import pipeline.options  # noqa: F401 -- defines the job's own flags

    proc = subprocess.run(
        [os.path.join(LAUNCH, script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=dict(os.environ, SHARDMEANS_DRY_RUN="1", SHARDMEANS_PYTHON=sys.executable),
    )
    printed = shlex.split(proc.stdout)
    assert printed[:4] == [sys.executable, "-m", "pipeline", command], printed
    return PipelineOptions(printed[4:])


def _image_tag():
    pins = _pins()
    return f"beam{pins['BEAM_VERSION']}-tf{pins['TENSORFLOW_VERSION']}-tft{pins['TFT_VERSION']}"


def test_dataflow_script_cpu_ships_setup_py():
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        SetupOptions,
        StandardOptions,
        WorkerOptions,
    )

    options = _dry_run(
        "dataflow.sh",
        "my-project",
        "europe-west1",
        "gs://my-bucket/",
        "--input",
        "gs://my-bucket/in/*.parquet",
        "--k",
        "8",
    )
    gcp = options.view_as(GoogleCloudOptions)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert (gcp.project, gcp.region) == ("my-project", "europe-west1")
    assert gcp.temp_location == "gs://my-bucket/shardmeans/temp"
    assert gcp.staging_location == "gs://my-bucket/shardmeans/staging"
    assert options.view_as(SetupOptions).setup_file == os.path.join(ROOT, "setup.py")
    assert options.view_as(WorkerOptions).sdk_container_image is None
    assert options.get_all_options()["k"] == "8"


def test_dataflow_script_gpu_uses_the_container_one_process_per_vm():
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        GoogleCloudOptions,
        SetupOptions,
        WorkerOptions,
    )

    from pipeline.options import KMeansOptions

    options = _dry_run(
        "dataflow.sh",
        "my-project",
        "us-central1",
        "my-bucket",
        "--gpu",
        "nvidia-tesla-t4:2",
        "--input",
        "gs://my-bucket/in/*",
        "--k",
        "8",
        "--machine_type=n1-standard-16",
    )
    assert options.view_as(GoogleCloudOptions).dataflow_service_options == [
        "worker_accelerator=type:nvidia-tesla-t4;count:2;install-nvidia-driver"
    ]
    assert "no_use_multiple_sdk_containers" in options.view_as(DebugOptions).experiments
    assert options.view_as(KMeansOptions).devices == "auto"
    workers = options.view_as(WorkerOptions)
    assert workers.sdk_container_image == (
        f"us-central1-docker.pkg.dev/my-project/shardmeans/worker:{_image_tag()}"
    )
    assert workers.machine_type == "n1-standard-16"
    assert options.view_as(SetupOptions).setup_file is None
    # An explicit image, and a malformed --gpu.
    options = _dry_run("dataflow.sh", "p", "r", "b", "--gpu=nvidia-l4:1", "--image=reg/img:1")
    assert options.view_as(WorkerOptions).sdk_container_image == "reg/img:1"
    bad = subprocess.run(
        [os.path.join(LAUNCH, "dataflow.sh"), "p", "r", "b", "--gpu", "t4"],
        capture_output=True,
        text=True,
        env=dict(os.environ, SHARDMEANS_DRY_RUN="1"),
    )
    assert bad.returncode == 2 and "TYPE:COUNT" in bad.stderr


@pytest.mark.parametrize(
    "environment, config",
    [("DOCKER", None), ("EXTERNAL", "tm-sidecar:50000"), ("PROCESS", "/opt/apache/beam/boot")],
)
def test_flink_script_environments(environment, config):
    from apache_beam.options.pipeline_options import (
        FlinkRunnerOptions,
        PortableOptions,
        StandardOptions,
    )
    from apache_beam.transforms import environments

    extra = {"EXTERNAL": ["--worker_pool", "tm-sidecar:50000"], "DOCKER": [], "PROCESS": []}[
        environment
    ]
    options = _dry_run(
        "flink.sh",
        "--flink_master",
        "jobmanager:8081",
        "--environment",
        environment.lower(),
        *extra,
        "--parallelism",
        "4",
        "--input",
        "gs://b/in/*",
        "--k",
        "8",
    )
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    assert options.view_as(FlinkRunnerOptions).flink_master == "jobmanager:8081"
    assert options.view_as(FlinkRunnerOptions).parallelism == 4
    portable = options.view_as(PortableOptions)
    assert portable.environment_type == environment
    assert int(portable.sdk_worker_parallelism) == 1
    env = environments.Environment.from_options(portable)
    if environment == "DOCKER":
        assert env.container_image == f"shardmeans-worker:{_image_tag()}"
    elif environment == "EXTERNAL":
        assert env.url == config
    else:
        assert env.command == config


@pytest.mark.parametrize(
    "script, args",
    [
        ("dataflow.sh", ["p", "europe-west1", "gs://b", "--machine_type=n1-standard-8"]),
        (
            "dataflow.sh",
            ["p", "us-central1", "b", "--gpu", "nvidia-l4:1", "--max_num_workers", "4"],
        ),
        (
            "flink.sh",
            ["--flink_master", "jm:8081", "--environment", "docker", "--parallelism", "4"],
        ),
        (
            "flink.sh",
            ["--flink_master", "jm:8081", "--environment", "external", "--worker_pool", "tm:50000"],
        ),
        ("flink.sh", ["--flink_master", "jm:8081", "--environment", "process"]),
    ],
)
@pytest.mark.parametrize("job", ["fit", "score"])
def test_launch_scripts_flags_are_accepted(script, args, job):
    """The commands launch/ builds (printed by its dry run) pass the check, for fit
    (the default) and for score (named first)."""
    own = ["--k", "8"] if job == "fit" else ["--model", "gs://b/fit", "--top_n", "2"]
    proc = subprocess.run(
        [
            os.path.join(ROOT, "launch", script),
            *([job] if job != "fit" else []),
            *args,
            "--input",
            "gs://b/in/*",
            "--output",
            "gs://b/out",
            *own,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=dict(os.environ, SHARDMEANS_DRY_RUN="1", SHARDMEANS_PYTHON=sys.executable),
    )
    command = shlex.split(proc.stdout)
    assert command[2:4] == ["pipeline", job], command
    flags.check_job_flags(command[4:], f"shardmeans {job}")


# -- the Flex Template metadata --------------------------------------------------------

GOOD = {
    "input": ["gs://bucket/in/*.parquet", "gs://b/data/part-*.csv"],
    "output": ["gs://bucket/out", "gs://bucket/runs/2024-01-01/"],
    "k": ["1", "8", "1024", "4,8,16"],
    "n_init": ["1", "10"],
    "restarts_on": ["sample", "all"],
    "select": ["silhouette", "calinski_harabasz", "davies_bouldin"],
    "format": ["csv", "parquet", "tfrecord"],
    "features": ["f0", "a,b,c", "price_usd,age"],
    "id_column": ["id", "customer_id"],
    "weight_column": ["w", "sample_weight"],
    "seed": ["0", "42"],
    "init_seed": ["0", "7"],
    "max_rounds": ["1", "100"],
    "tol": ["0", "1e-4", "0.001", "1E-6"],
    "init": ["k-means++", "random", "gs://bucket/init/centroids.npy"],
    "init_model": ["gs://bucket/fits/2024-01", "gs://b/fit/model/1"],
    "standardize": ["z_score", "none"],
    "distance": ["euclidean", "cosine"],
    "on_invalid": ["reject", "fail"],
    "init_sample_size": ["1", "100000"],
    "init_refine_rounds": ["0", "100"],
    "merge_to": ["1", "3"],
    "batch_size": ["1", "65536"],
    "cache_mb": ["0", "4096"],
    "devices": ["auto", "cpu", "cpu:4", "gpu:0", "gpu:0,1"],
    "contamination": ["0.01", "0.5", "1e-4", ".05"],
    "top_n": ["0", "3"],
    "missing": ["reject", "impute"],
    "categorical": ["zip", "zip,store_code"],
    "max_categories": ["1", "100"],
}
BAD = {
    "input": ["", "data/*.csv"],
    "output": ["", "out"],
    "k": ["0", "-1", "three", "2.5", "4,,8", "4,8,"],
    "n_init": ["0", "-2", "x"],
    "restarts_on": ["full", ""],
    "select": ["inertia", ""],
    "format": ["json", ""],
    "features": ["", "a,,b", ",a"],
    "weight_column": [""],
    "seed": ["x", "1.5", "-1", "99999999999"],
    "init_seed": ["x", "-1"],
    "max_rounds": ["0", "-3"],
    "tol": ["-1", "abc", ""],
    "init": ["kmeans", "gs://bucket/c.csv"],
    "init_model": ["", "fits/2024-01", "gs://bucket"],
    "standardize": ["zscore", ""],
    "distance": ["manhattan", ""],
    "on_invalid": ["drop", ""],
    "init_sample_size": ["0", "-1", "1e5"],
    "init_refine_rounds": ["-1", "x"],
    "merge_to": ["0", "x"],
    "batch_size": ["0", "64k"],
    "cache_mb": ["-1", "1.5"],
    "devices": ["tpu", "cpu:0", "gpu", ""],
    "contamination": ["-0.1", "x", ""],
    "top_n": ["-1", "x", "1.5"],
    "missing": ["mean", ""],
    "categorical": ["", "a,,b"],
    "max_categories": ["0", "-1", "x"],
}


def test_flex_template_entry_file_runs_fit_on_dataflow():
    """The file the Flex Template image runs takes the template's flags as `fit`'s."""
    proc = subprocess.run(
        [sys.executable, os.path.join(LAUNCH, "flex_template_main.py"), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: shardmeans fit") and "--input" in proc.stdout
    with open(os.path.join(LAUNCH, "Dockerfile")) as f:
        assert "COPY launch/flex_template_main.py ./" in f.read()


def test_flex_template_metadata():
    from apache_beam.options.pipeline_options import PipelineOptions

    import pipeline.options  # noqa: F401 -- defines the fit flags parsed below

    with open(os.path.join(LAUNCH, "metadata.json")) as f:
        spec = json.load(f)
    assert spec["name"] and spec["description"]
    params = {p["name"]: p for p in spec["parameters"]}
    assert len(params) == len(spec["parameters"])
    assert set(params) == set(GOOD)
    for name, p in params.items():
        assert {"name", "label", "helpText", "isOptional", "regexes"} <= set(p), name
        assert p["label"] and p["helpText"] and p["regexes"], name
        assert p["isOptional"] is (name not in ("input", "output", "k")), name
        for value in GOOD[name]:
            assert all(re.fullmatch(r, value) for r in p["regexes"]), (name, value)
            # Every value the template accepts is one the CLI accepts.
            got = PipelineOptions([f"--{name}={value}"]).get_all_options()[name]
            assert str(got) == value or got == type(got)(value), (name, value, got)
        for value in BAD.get(name, []):
            assert not all(re.fullmatch(r, value) for r in p["regexes"]), (name, value)
