"""The example Airflow DAG (launch/airflow/), run for real by `airflow dags test`.

Airflow and the Beam provider pin their own dependencies, so they live in a virtual
environment of their own (created once per machine and pins, under the test cache,
from PyPI); the jobs run in ours: the DAG's `python` param is this interpreter, as a
user points it at the venv where shardmeans is installed. On small generated data, with
the DirectRunner, two daily runs of the DAG copied into a fresh AIRFLOW_HOME:

- day 1 (no model yet): fit, score of the same distribution, no drift: no refit;
- day 2, every feature moved by 3 standard deviations: score with day 1's model, the
  drift warning, and a refit that starts warm from day 1's model (`init_model`).

The Beam provider's operators refuse to be built without Airflow's Google provider, on
any runner (provider 6.3.1, BeamDataflowMixin), so it is installed too.
"""

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import ROOT, main, metrics

PINS = (
    "apache-airflow==3.3.2",
    "apache-airflow-providers-apache-beam==6.3.1",
    "apache-airflow-providers-google==22.8.0",
)
DAYS = ("2026-01-01", "2026-01-02")
K = 3
# Installing, migrating Airflow's database and two runs of four jobs in all.
pytestmark = pytest.mark.timeout(1800)


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "shardmeans-tests")


def _install(venv: str) -> None:
    """Airflow and the providers (PINS) into a new virtual environment `venv`, from PyPI:
    with uv when our venv has it (Makefile), else venv + pip."""
    uv = os.path.join(os.path.dirname(sys.executable), "uv")
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(uv):
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, venv], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", python, *PINS], check=True)
    else:
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *PINS], check=True)


def _airflow_env(bin_dir: str, home: str, dags: str = "") -> dict:
    """The environment of an `airflow` command of `bin_dir` with AIRFLOW_HOME `home`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__DAGS_FOLDER=dags or os.path.join(home, "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
    )
    return env


def _migrate(bin_dir: str, home: str) -> None:
    """Create Airflow's database (SQLite, AIRFLOW_HOME/airflow.db)."""
    proc = subprocess.run(
        [os.path.join(bin_dir, "airflow"), "db", "migrate"],
        env=_airflow_env(bin_dir, home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def airflow_venv():
    """(the bin/ of a virtual environment holding PINS, an empty migrated airflow.db):
    reused while the pins are these (a marker written once both are made), else made
    again; a file lock keeps two test runs from installing into it at once."""
    cache = _cache_dir()
    os.makedirs(cache, exist_ok=True)
    key = hashlib.sha1("\n".join((sys.version, *PINS)).encode()).hexdigest()[:12]
    venv = os.path.join(cache, f"airflow-{key}")
    with open(os.path.join(cache, f"airflow-{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        bin_dir, home = os.path.join(venv, "bin"), os.path.join(venv, "empty_home")
        if not os.path.exists(os.path.join(venv, ".installed")):
            shutil.rmtree(venv, ignore_errors=True)  # a partial install of ours
            started = time.monotonic()
            _install(venv)
            installed = time.monotonic()
            _migrate(bin_dir, home)
            with open(os.path.join(venv, ".installed"), "w") as f:
                f.write(
                    f"{installed - started:.0f} s to install, "
                    f"{time.monotonic() - installed:.0f} s to migrate the database\n"
                )
    return bin_dir, os.path.join(home, "airflow.db")


def _days(root) -> str:
    """`shardmeans generate` rows for day 1, the same rows moved by 3 standard deviations
    of each feature for day 2; returns the partition pattern, '{ds}' for the day."""
    first = os.path.join(root, "data", DAYS[0])
    assert main(["generate", "--output", first, "--rows", "1500", "--features", "3"] + [
        "--clusters", str(K), "--shards", "2", "--seed", "5"
    ]) == 0  # fmt: skip
    files = sorted(glob.glob(os.path.join(first, "*.parquet")))
    x = np.concatenate(
        [np.column_stack([pq.read_table(f).column(n).to_numpy() for n in ("f0", "f1", "f2")])
         for f in files]
    )  # fmt: skip
    shift = 3 * x.std(axis=0)
    os.makedirs(os.path.join(root, "data", DAYS[1]))
    for f in files:
        table = pq.read_table(f)
        for j, name in enumerate(("f0", "f1", "f2")):
            moved = pa.array(table.column(name).to_numpy() + shift[j])
            table = table.set_column(table.schema.get_field_index(name), name, moved)
        pq.write_table(table, f.replace(DAYS[0], DAYS[1]))
    return os.path.join(str(root), "data", "{ds}", "*.parquet")


@pytest.fixture(scope="module")
def runs(airflow_venv, tmp_path_factory):
    """(WORK, {day: the `airflow dags test` output}) after the DAG ran for both days."""
    bin_dir, empty_db = airflow_venv
    root = tmp_path_factory.mktemp("airflow")
    dags, home = root / "dags", root / "home"
    dags.mkdir()
    home.mkdir()
    for name in ("shardmeans_dag.py", "shardmeans_job.py"):  # as a user copies them
        shutil.copy(os.path.join(ROOT, "launch", "airflow", name), dags)
    shutil.copy(empty_db, home / "airflow.db")  # what `airflow db migrate` makes
    env = _airflow_env(bin_dir, str(home), str(dags))
    airflow = os.path.join(bin_dir, "airflow")
    work = root / "work"
    conf = {
        "python": sys.executable,
        "input": _days(root),
        "work": str(work),
        "k": K,
        "fit_flags": {"id_column": "id", "max_rounds": 6, "n_init": 1},
        "score_flags": {"id_column": "id"},
    }
    logs = {}
    for day in DAYS:
        proc = subprocess.run(
            [airflow, "dags", "test", "shardmeans", day, "--conf", json.dumps(conf)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        logs[day] = proc.stdout + proc.stderr
        assert proc.returncode == 0, logs[day][-6000:]
        assert "DagRun Finished: dag_id=shardmeans" in logs[day], logs[day][-6000:]
        assert "state=success" in logs[day].split("DagRun Finished")[1].splitlines()[0]
    return work, logs


def test_day_one_fits_scores_and_does_not_refit(runs):
    work, logs = runs
    fitted, scored = work / "models" / f"{DAYS[0]}-fit", work / "scores" / DAYS[0]
    for output in (fitted, scored):
        assert (output / "_SUCCESS").exists(), output
    assert metrics(fitted)["k"] == K and metrics(fitted)["features"] == ["f0", "f1", "f2"]
    m = metrics(scored)
    assert m["model"] == str(fitted / "model" / "1")
    assert m["rows_valid"] == 1500 and m["drift"]["warning"] is None
    assert "Following branch {'fit'}" in logs[DAYS[0]]
    assert "Following branch {'no_drift'}" in logs[DAYS[0]]
    assert not (work / "models" / f"{DAYS[0]}-refit").exists()
    # Run by the Beam provider's operator, with the DAG's interpreter and runner.
    assert f"Running command: {sys.executable} " in logs[DAYS[0]]
    assert "--runner=DirectRunner" in logs[DAYS[0]]


def test_day_two_drifts_and_refits_warm_from_day_one(runs):
    work, logs = runs
    fitted = work / "models" / f"{DAYS[0]}-fit"
    scored, refitted = work / "scores" / DAYS[1], work / "models" / f"{DAYS[1]}-refit"
    for output in (scored, refitted):
        assert (output / "_SUCCESS").exists(), output
    assert "Following branch {'model'}" in logs[DAYS[1]]  # no new fit: day 1's model
    m = metrics(scored)
    assert m["model"] == str(fitted / "model" / "1")
    assert "off the training distribution" in m["drift"]["warning"]
    assert "Following branch {'refit'}" in logs[DAYS[1]]
    refit = metrics(refitted)
    assert refit["init_model"] == str(fitted / "model" / "1") and refit["init"] == "given"
    assert refit["k"] == K and refit["rows_valid"] == 1500 and refit["rounds"] <= 6
    assert f"--init_model={fitted}" in logs[DAYS[1]]


@pytest.mark.parametrize(
    "args, status, words",
    [
        (
            ["--runner=DirectRunner", "--k=3"],
            2,
            "give exactly one --command (fit or score), got none",
        ),
        (["--command=generate"], 2, "got ['generate']"),
        (["--command=fit", "--command=score"], 2, "got ['fit', 'score']"),
        (["--runner=DirectRunner", "--command", "fit", "--help"], 0, "usage: shardmeans fit"),
    ],
)
def test_the_job_file_takes_the_command_as_an_option(args, status, words):
    """What the operator starts: `python shardmeans_job.py --runner=R --NAME=VALUE ...`."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "airflow", "shardmeans_job.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == status, proc.stderr
    assert words in proc.stdout + proc.stderr
