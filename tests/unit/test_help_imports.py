"""The commands that need neither load TensorFlow or Beam: `--help` of every command,
`--version` and `generate` of CSV or Parquet answer in a fraction of a second
(bench/fixed_cost.py measures it). Each runs in a fresh interpreter with
`-X importtime`, whose report names every module the process imported."""

import re
import subprocess
import sys

import pytest

from helpers import ROOT

HEAVY = ("tensorflow", "tensorflow_transform", "apache_beam", "tf_keras", "keras")


def _imported(args, cwd=ROOT, program=("-m", "pipeline")):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *program, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", proc.stderr, re.M)
    assert modules, proc.stderr[-2000:]  # the report is there: the check can fail
    return proc.stdout, {m.split(".")[0] for m in modules}


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["fit", "--help"], ["score", "--help"], ["generate", "--help"]],
)
def test_help_loads_no_tensorflow_or_beam(args):
    stdout, top_level = _imported(args)
    assert stdout.strip()
    assert not top_level & set(HEAVY), sorted(top_level & set(HEAVY))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_generate_loads_no_tensorflow_or_beam(tmp_path, fmt):
    out = tmp_path / "data"
    stdout, top_level = _imported(
        ["generate", "--output", str(out), "--rows", "100", "--format", fmt], cwd=tmp_path
    )
    assert "wrote 100 rows" in stdout and any(out.iterdir())
    assert not top_level & set(HEAVY), sorted(top_level & set(HEAVY))


def test_the_import_report_sees_beam():
    """The check can fail: what imports Beam's options, as `fit` does, shows in the report."""
    _, top_level = _imported([], program=("-c", "import pipeline.options"))
    assert "apache_beam" in top_level


def test_checking_shardmeans_own_flags_loads_no_beam():
    """The flag check before a job: only a Beam flag (or an error) needs Beam's parsers,
    so the command's first line comes without waiting for Beam's import."""
    code = (
        "import sys\n"
        "from pipeline.flags import check_job_flags\n"
        "check_job_flags(['--input', 'x', '--output', 'y', '--k', '3', '--missing', 'impute'],"
        " prog='shardmeans fit')\n"
        "assert 'apache_beam' not in sys.modules, 'Beam imported'\n"
        "check_job_flags(['--input', 'x', '--output', 'y', '--runner', 'DirectRunner'],"
        " prog='shardmeans fit')\n"
        "assert 'apache_beam' in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
