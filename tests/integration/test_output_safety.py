"""The output protocol through the fit and score jobs: no input deleted, no row duplicated,
no half-written output taken for a finished one; reruns after killed, failed and
concurrent runs. Publishing on its own is in tests/unit/test_run_output.py."""

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipeline.cli import main
from pipeline.outputs import run_output

from helpers import (
    FAST,
    ROOT,
    assignments,
    fit,
    fit_subprocess,
    leftovers,
    metrics,
    scaled_blobs,
    write_shards,
)


@pytest.fixture()
def csv_input(tmp_path):
    """300 rows in 3 CSV files under tmp_path/in; returns the glob."""
    return write_shards(scaled_blobs(300, 3, 2, seed=1), tmp_path / "in", "csv")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished fit of rows like csv_input's, its standardized shards kept; a test that
    changes it works on a copy."""
    base = tmp_path_factory.mktemp("finished")
    pattern = write_shards(scaled_blobs(300, 3, 2, seed=1), base / "in", "csv")
    args = ("--input", pattern, "--id_column", "id", *FAST, "--keep_standardized")
    assert fit(base / "out", *args) == 0
    return base / "out"


def _digests(pattern):
    return {
        p: hashlib.sha256(open(p, "rb").read()).hexdigest()
        for p in glob.glob(pattern, recursive=True)
        if os.path.isfile(p)
    }


def _marker(output):
    with open(os.path.join(output, run_output.MARKER)) as f:
        return json.load(f)


def _assert_complete(output):
    """OUTPUT is one run's: the marker, the metrics and every file agree, the rows once each."""
    marker, m = _marker(output), metrics(output)
    assert marker["run_id"] == m["run_id"]
    listed = {f["path"] for f in marker["files"]}
    on_disk = {
        os.path.relpath(os.path.join(d, f), output)
        for d, _, files in os.walk(output)
        for f in files
    } - {run_output.MARKER}
    assert listed == on_disk
    ids = assignments(output).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == m["rows_valid"]
    assert not leftovers(output)


def test_output_overlapping_the_input_is_refused_before_anything_is_deleted(
    csv_input, tmp_path, capsys
):
    before = _digests(csv_input)
    # The input's own directory as the output, with --overwrite: refused, nothing touched.
    assert fit(tmp_path / "in", "--input", csv_input, *FAST, "--overwrite") == 2
    assert "overlaps the input" in capsys.readouterr().err
    # An input reached through a symlink inside the output directory.
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(tmp_path / "in", out / "data")
    assert fit(out, "--input", str(out / "data" / "*.csv"), *FAST, "--overwrite") == 2
    # A pattern that would match the run's own files.
    assert fit(tmp_path / "in" / "o", "--input", str(tmp_path / "in" / "*"), *FAST) == 2
    assert "would also match" in capsys.readouterr().err
    assert _digests(csv_input) == before
    assert not leftovers(tmp_path / "in") and not leftovers(out)


def test_an_output_holding_only_directories_is_not_empty(csv_input, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "assignments" / "beam-temp-part-1").mkdir(parents=True)
    assert fit(out, "--input", csv_input, "--id_column", "id", *FAST) == 2
    assert "not empty" in capsys.readouterr().err
    assert fit(out, "--input", csv_input, "--id_column", "id", *FAST, "--overwrite") == 0
    _assert_complete(out)
    assert not os.path.exists(out / "assignments" / "beam-temp-part-1")
    # A file as the output is refused in one line.
    (tmp_path / "file").write_text("x")
    assert fit(tmp_path / "file", "--input", csv_input, *FAST) == 2
    assert "is a file" in capsys.readouterr().err


def test_two_workers_then_one_with_overwrite_keeps_every_row_once(csv_input, tmp_path):
    out = tmp_path / "out"
    assert (
        fit(
            out,
            "--input",
            csv_input,
            "--id_column",
            "id",
            *FAST,
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        )
        == 0
    )
    _assert_complete(out)
    first = _marker(out)["run_id"]
    assert fit(out, "--input", csv_input, "--id_column", "id", *FAST, "--overwrite") == 0
    _assert_complete(out)
    assert _marker(out)["run_id"] != first
    assert metrics(out)["rows_valid"] == 300


def test_a_failed_rerun_leaves_the_previous_output_intact(finished, csv_input, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    good = _marker(out)
    before = _digests(str(out / "**" / "*"))
    # A bad row found while the job runs (not while the graph is built) fails the rerun.
    with open(tmp_path / "in" / "part-1.csv", "a") as f:
        f.write("999,1.0,oops,2.0\n")
    assert (
        fit(
            out,
            "--input",
            csv_input,
            "--id_column",
            "id",
            *FAST,
            "--overwrite",
            "--on_invalid",
            "fail",
        )
        == 2
    )
    assert "oops" in capsys.readouterr().err
    assert _marker(out) == good and _digests(str(out / "**" / "*")) == before
    assert not leftovers(out)


def _start_fit(output, pattern, *args):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "fit",
            "--output",
            str(output),
            "--input",
            pattern,
            *map(str, args),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_concurrent_and_killed_runs(tmp_path, capsys):
    """A second run into an output being written is refused; a killed --overwrite rerun leaves
    the previous output as it was, and the next rerun takes over its lock and files."""
    # Rows enough that the slow runs, reading them again in each of 30 uncached rounds,
    # are still running long after their shards appear, where they are killed.
    rows = 40_000
    pattern = write_shards(scaled_blobs(rows, 8, 4, seed=2), tmp_path / "in", "parquet")
    out = tmp_path / "out"
    lock = str(out) + run_output.LOCK_SUFFIX
    slow_flags = (
        "--id_column",
        "id",
        "--k",
        8,
        "--n_init",
        1,
        "--init_refine_rounds",
        0,
        "--max_rounds",
        30,
        "--tol",
        0,
        "--cache_mb",
        0,
    )
    # A first run killed while it writes: the rerun needs no --overwrite.
    slow = _start_fit(out, pattern, *slow_flags)
    try:
        _wait_for(lambda: glob.glob(str(out) + ".incomplete-*/_work/shards/*.arrow"), slow)
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    assert not os.path.exists(out) and os.path.exists(lock)
    assert fit(out, "--input", pattern, "--id_column", "id", *FAST) == 0
    _assert_complete(out)
    good = _marker(out)
    # A run into the output while an --overwrite rerun writes it; then that rerun killed.
    slow = _start_fit(out, pattern, *slow_flags, "--overwrite")
    try:
        _wait_for(lambda: os.path.exists(lock), slow)
        with open(lock) as f:
            held = json.load(f)
        assert fit(out, "--input", pattern, "--id_column", "id", *FAST, "--overwrite") == 2
        err = capsys.readouterr().err
        assert f"run {held['run_id']}" in err and "is writing to" in err
        _wait_for(
            lambda: glob.glob(os.path.join(held["stage"], "_work", "shards", "*.arrow")), slow
        )
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    assert _marker(out) == good and os.path.exists(lock) and os.path.isdir(held["stage"])
    assert (
        main(
            [
                "fit",
                "--output",
                str(out),
                "--input",
                pattern,
                "--id_column",
                "id",
                *map(str, FAST),
                "--overwrite",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    _assert_complete(out)
    assert f"run {metrics(out)['run_id']}:" in printed and metrics(out)["rows_valid"] == rows


def test_score_refuses_an_unfinished_or_incomplete_model(finished, csv_input, tmp_path, capsys):
    out = tmp_path / "fit"
    shutil.copytree(finished, out)

    def score(model, output):
        return main(
            [
                "score",
                "--model",
                str(model),
                "--input",
                csv_input,
                "--output",
                str(tmp_path / output),
            ]
        )

    # Scoring into the model's own directory would replace the model.
    assert score(out, "fit") == 2
    assert "overlaps the input" in capsys.readouterr().err
    os.rename(out / run_output.MARKER, tmp_path / "marker")
    for model in (out, out / "model", out / "model" / "1"):
        assert score(model, "scored") == 2
        assert "no _SUCCESS marker" in capsys.readouterr().err
    os.rename(tmp_path / "marker", out / run_output.MARKER)
    os.rename(out / "model" / "1" / "variables", tmp_path / "variables")
    assert score(out, "scored") == 2
    assert "has no variables/" in capsys.readouterr().err
    os.rename(tmp_path / "variables", out / "model" / "1" / "variables")
    assert score(out / "model", "scored") == 0
    _assert_complete(tmp_path / "scored")


def test_kept_shards_are_read_after_the_output_is_published(finished):
    from transforms.beam.shards import iter_standardized

    paths = glob.glob(str(finished / "_work" / "shards" / "*.arrow"))
    assert paths and sum(len(z) for p in paths for _, z in iter_standardized(p, 3, 100)) == 300


def test_an_output_where_the_run_may_not_write_is_one_line(csv_input, tmp_path):
    """Root writes anywhere: the fit runs without the capabilities that let it (setpriv)."""
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    proc = fit_subprocess(parent / "out", "--input", csv_input, *FAST, unprivileged=True)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("shardmeans")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"cannot write in {parent}: Permission denied" in lines[0]
    assert "Traceback" not in proc.stderr
