"""What a run prints (issue #23): our lines only, on the DirectRunner in both modes; with
--verbose, TensorFlow's and Beam's logs too. Run as `python -m pipeline fit` processes:
the start-up chatter is written by TensorFlow's libraries as they load, once a process."""

import re

import pytest

from helpers import FAST, fit_subprocess

# The lines of other programs a default run used to print.
CHATTER = (
    "absl::InitializeLog",  # Abseil's, before TensorFlow's logging is initialised
    "oneDNN custom operations",  # TensorFlow's, as its libraries load
    "cudart_stub",
    "cpu_feature_guard",
    "BatchElements statistics",  # Beam's
    "Discarding unparseable args",  # a worker's, of the job's flags
    "semi_persistent_directory",  # a local worker's
    "Completed job in",  # the job service's
)
# Our log lines: the command's format, our loggers (the round lines log on the root logger).
OURS = re.compile(
    r"^\d{4}-\d\d-\d\d [\d:,]+ (INFO|WARNING) (root|pipeline[\w.]*|transforms[\w.]*): "
)

MODES = {
    "in_process": (),
    "multi_processing": ("--direct_running_mode=multi_processing", "--direct_num_workers=2"),
}


@pytest.mark.parametrize("mode", MODES)
def test_a_default_run_prints_our_lines_only(mode, blob_parquet, tmp_path):
    proc = fit_subprocess(
        tmp_path / "out", "--input", blob_parquet, "--id_column", "id", *FAST, *MODES[mode]
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    for text in (proc.stdout, proc.stderr):
        assert not [c for c in CHATTER if c in text], text[-5000:]
    assert proc.stdout.startswith("rows: ")
    strangers = [line for line in proc.stderr.splitlines() if not OURS.match(line)]
    assert not strangers, proc.stderr[-5000:]
    # One line per phase and round, from the job's metrics, in both modes (pipeline.progress).
    progress = [
        line.split("progress: ", 1)[1] for line in proc.stderr.splitlines() if "progress: " in line
    ]
    expected = [
        "fit: loading Beam and TensorFlow",
        "running on the DirectRunner",
        "reading and validating: 3 of 3 files, 3000 rows read, 3000 valid, 0 rejected (",
        "analysing: done (tf.Transform), init sample of 3000 rows (",
        "sampling and initialising: 1 start on the init sample, 1 fitted over all rows (",
        "round 1 of 2: inertia ",
        "round 2 of 2: inertia ",
        "final pass: 3000 rows assigned (",
        "writing: ",
    ]
    assert len(progress) == len(expected), proc.stderr[-5000:]
    for line, start in zip(progress, expected):
        assert line.startswith(start), (line, start)
    assert re.search(r"elapsed, at most 1 round left \(~[\d.]+ s\)$", progress[5]), progress[5]
    # ... and the round once only: the library's own round log is for other pipelines.
    assert "round 1: inertia" not in proc.stderr


def test_verbose_shows_tensorflows_and_beams_logs(blob_parquet, tmp_path):
    proc = fit_subprocess(
        tmp_path / "out",
        "--input",
        blob_parquet,
        "--id_column",
        "id",
        *FAST,
        *MODES["multi_processing"],
        "--verbose",
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "oneDNN custom operations" in proc.stderr  # the driver's and the workers'
    assert proc.stderr.count("oneDNN custom operations") > 2
    assert "BatchElements statistics" in proc.stderr
    # The cause is gone, not hidden: the workers parse every option they are sent.
    assert "Discarding unparseable args" not in proc.stderr
