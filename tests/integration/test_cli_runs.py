"""The command's errors in real runs (issue #20): a worker process's error classified,
Ctrl-C during a real fit. The rest of the command's errors, with its jobs replaced, are
in tests/unit/test_cli_errors.py."""

import os
import signal
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.failures import user_message

from beam_failures import RAISED, WANTED, run_failing
from helpers import ROOT, TESTS


@pytest.mark.parametrize("kind", ["user", "full_disk"])
def test_classifier_on_a_real_multi_process_run(kind, monkeypatch):
    """The runner with SDK worker processes, for real: the error arrives as text."""
    # The workers unpickle Raise: they import beam_failures (and transforms) by name.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, ROOT]))
    error = run_failing(
        RAISED[kind],
        options=PipelineOptions(
            ["--direct_running_mode=multi_processing", "--direct_num_workers=1"]
        ),
    )
    assert type(error) is RuntimeError and "Traceback (most recent call last)" in str(error)
    assert user_message(error) == WANTED[kind]


def test_ctrl_c_during_a_real_fit(tmp_path):
    """SIGINT to `python -m pipeline fit` once its pipeline runs: status 130, last line
    "interrupted", no traceback. A SIGINT that lands while Python runs a __del__ (of
    TensorFlow's) is dropped by Python ("Exception ignored in"): then the job finishes,
    status 0, and the test sends it again to a new run."""
    data = tmp_path / "in.csv"
    data.write_text(
        "id,x,y\n" + "".join(f"{i},{(i * 37) % 101},{(i * 91) % 103}\n" for i in range(3000))
    )
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "fit",
                "--input",
                str(data),
                "--output",
                str(out),
                "--k",
                "8",
                "--n_init",
                "1",
                "--init_refine_rounds",
                "0",
                "--max_rounds",
                "30",
                "--tol",
                "0",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen = []
        for line in proc.stderr:  # the job logs as it runs; interrupt it in its first pass
            seen.append(line)
            if "KMeansStep: " in line:  # (logged as the first pass builds the step)
                proc.send_signal(signal.SIGINT)
                break
        stdout, rest = proc.communicate(timeout=120)
        stderr = "".join(seen) + rest
        if proc.returncode == 0 and "Exception ignored in" in stderr:
            continue  # the dropped SIGINT (see above)
        assert proc.returncode == 130, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == "shardmeans fit: interrupted", stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        return
    pytest.fail("every SIGINT was dropped")
