"""pipeline.logs: which lines written as TensorFlow loads are dropped, and the rest kept."""

import logging
import os
import sys

import pytest

from pipeline import logs, private_apis

ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
INFO = "I0000 00:00:1796677091.712419   30142 port.cc:153] oneDNN custom operations are on.\n"
ERROR = "E0000 00:00:1796677305.725951    1447 cuda_platform.cc:52] failed call to cuInit\n"
TSL = "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] x\n"


@pytest.mark.parametrize(
    "line, level, dropped",
    [
        (ABSL, 3, True),
        (ABSL, 0, False),
        (INFO, 1, True),
        (INFO, 0, False),
        (ERROR, 2, False),
        (ERROR, 3, True),
        (TSL, 1, True),
        ("/x/y.py:3: UserWarning: I0000 00:00:1.0 1 a.cc:1] x\n", 3, False),
        ("Traceback (most recent call last):\n", 3, False),
    ],
)
def test_load_chatter(line, level, dropped):
    assert logs.is_load_chatter(line, level) is dropped


def test_stderr_filtered_keeps_other_lines(capfd):
    with logs._stderr_filtered(lambda line: logs.is_load_chatter(line, 3)):
        os.write(2, (ABSL + INFO + "kept by fd\n").encode())
        print("kept by Python", file=sys.stderr)
    # (in any order: under pytest, sys.stderr does not write to descriptor 2)
    assert sorted(capfd.readouterr().err.splitlines()) == ["kept by Python", "kept by fd"]


def test_stderr_filtered_writes_back_when_the_block_raises(capfd):
    with (
        pytest.raises(ImportError),
        logs._stderr_filtered(lambda line: logs.is_load_chatter(line, 3)),
    ):
        os.write(2, (INFO + "why it failed\n").encode())
        raise ImportError("x")
    assert capfd.readouterr().err == "why it failed\n"


def test_beam_chatter_filter():
    import apache_beam

    beam_file = os.path.join(os.path.dirname(apache_beam.__file__), "runners", "x.py")

    def record(level, path, message):
        return logging.LogRecord("root", level, path, 1, message, None, None)

    keep = logs.BeamChatter().filter
    assert not keep(record(logging.INFO, beam_file, "Completed job in 9 seconds"))
    assert keep(record(logging.WARNING, beam_file, "a Beam warning"))
    assert keep(record(logging.INFO, __file__, "round 1: inertia 3"))
    assert not keep(record(logging.WARNING, beam_file, "No semi_persistent_directory found: x"))


def test_workers_get_only_options_they_parse():
    from pipeline.options import ViewCachingOptions

    options = ViewCachingOptions(
        ["--k", "3", "--input", "x", "--direct_running_mode=multi_processing", "--seed", "0"]
    )
    assert private_apis.worker_options(options) == {"direct_running_mode": "multi_processing"}
