"""Pipelines whose DoFn raises, and what the command should print for each error: the
exceptions Beam's runners really raise, for pipeline.failures' tests.

A module of its own (not a test file): SDK workers in other processes unpickle `Raise`
by importing it, with tests/ on their PYTHONPATH.
"""

import errno
import os
import traceback

import apache_beam as beam
import pytest

from transforms.core.errors import UserInputError

STAGE = "KMeans/Lloyd/Round003/PartialSums"
FULL = "/data/out/assignments/part-00000.parquet"
LOCKED = "/data/locked/out"


class Raise(beam.DoFn):
    """Raises `what` (a picklable exception, or 'interrupt') on its first element."""

    def __init__(self, what):
        self.what = what

    def process(self, element):
        if self.what == "interrupt":
            raise KeyboardInterrupt()
        raise self.what


RAISED = {
    "user": UserInputError("a.csv, row 3, column 'x': NaN (--on_invalid=fail)"),
    "full_disk": OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), FULL),
    "full_disk_no_path": OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    "denied": PermissionError(errno.EACCES, os.strerror(errno.EACCES), LOCKED),
    "read_only": OSError(errno.EROFS, os.strerror(errno.EROFS), LOCKED),
    "bug": ZeroDivisionError("division by zero"),
    "interrupt": "interrupt",
}
WANTED = {
    "user": "a.csv, row 3, column 'x': NaN (--on_invalid=fail)",
    "full_disk": f"no space left on device: {FULL}",
    "full_disk_no_path": "no space left on device (the error names no path; "
    "--verbose shows the full error)",
    "denied": f"permission denied: {LOCKED}",
    "read_only": f"read-only file system: {LOCKED}",
    "bug": None,
    "interrupt": None,
}


def run_failing(what, options=None, runner=None) -> Exception:
    """What `pipeline.run().wait_until_finish()` raises when a DoFn at STAGE raises `what`."""
    pipeline = beam.Pipeline(runner=runner, options=options)
    _ = (
        pipeline
        | beam.Create([1, 2])
        | "KMeans" >> (beam.Map(lambda x: x) | STAGE.split("/", 1)[1] >> beam.ParDo(Raise(what)))
    )
    with pytest.raises(Exception) as info:
        pipeline.run().wait_until_finish()
    return info.value


def as_worker_text(error: BaseException, prefix: str = "") -> RuntimeError:
    """`error` as a runner with SDK workers in other processes delivers it: the worker
    sends traceback.format_exc() (sdk_worker.py), the runner raises RuntimeError(text)."""
    return RuntimeError(prefix + "".join(traceback.format_exception(error)))
