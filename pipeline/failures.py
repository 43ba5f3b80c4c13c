"""Which failures are the user's to fix, and the one line that says so.

The command prints `user_message(error)` alone (no traceback) and exits with
status 2 when it is not None:

- a user error: bad input or options (transforms.core.errors.UserInputError), a
  flag the command cannot take (pipeline.flags.FlagError);
- a full disk (ENOSPC, or EDQUOT: a quota is full), named with the path where
  it happened when the error carries it;
- a location the job may not read or write: permission denied (EACCES, EPERM),
  a read-only file system (EROFS), named with the path likewise.

Anything else is a bug and keeps its traceback.

A worker's exception reaches the driver wrapped by the runner. The shapes,
from Beam 2.77 (apache_beam.runners.common.DoFnRunner._reraise_augmented and
the FnApiRunner; tests/unit/test_cli_errors.py builds each):

- In process (the FnApiRunner's embedded worker, the default local run): the
  exception re-raised with " [while running 'STAGE']" appended to its message,
  when its type can be rebuilt from (message, *rest): a UserInputError stays a
  UserInputError. An OSError cannot (its first argument is the errno, an int):
  it becomes RuntimeError("OSError: [Errno 28] No space left on device: '/p'
  [while running 'STAGE']"), raised while handling the original, which is its
  __context__.
- From an SDK worker in another process (--direct_running_mode=multi_processing,
  a portable runner, Flink, Dataflow): a RuntimeError whose message is the
  worker's formatted traceback, with lines such as
  "transforms.core.errors.UserInputError: MESSAGE" and, after "During handling of
  the above exception", the annotated one; a portable job's error is prefixed
  with "Pipeline JOB failed in state FAILED: Error running pipeline." The stage
  annotation is then mid-string, followed by more lines.

The stage annotation names a step of the graph (`KMeans/Round 3/...`), which
means nothing to a user: it is removed from the line printed; the command logs
the full error at DEBUG (shown with --verbose).
"""

import errno
import os
import re
import sys
from typing import Iterator, Optional

from pipeline.flags import FlagError

# Beam's " [while running 'STAGE']", wherever it is in a message.
_STAGE = re.compile(r" ?\[while running '.*?'\]")
# A UserInputError's line in a wrapped error's text: its type, maybe module-qualified.
_USER_ERROR_LINE = re.compile(r"\bUserInputError: (.+)")
# A KeyboardInterrupt's line in a wrapped error's text ("KeyboardInterrupt [while running
# 'STAGE']", or a worker's traceback ending "RuntimeError: KeyboardInterrupt ...").
_INTERRUPT_TEXT = re.compile(r"^(?:[\w.]+: )?KeyboardInterrupt(?: \[while running|$)", re.MULTILINE)
# An OSError's str(): "[Errno 28] No space left on device: '/path'", the path optional
# (and a second one, "-> '/other'", after it for a rename).
_OS_ERROR_TEXT = re.compile(
    r"\[Errno (?P<errno>\d+)\] (?P<strerror>[^\n]*?)(?:: (?P<path>'[^'\n]*'|\"[^\"\n]*\"))?"
    r"(?= ->| \[while running|$|\n)",
    re.MULTILINE,
)

# The OS errors a user fixes where the job runs (free space, permissions, a writable
# location), not in the code.
ENVIRONMENT_ERRNOS = tuple(
    code
    for code in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),  # a full disk or quota
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,  # may not read or write there
    )
    if code is not None
)


def user_message(error: BaseException, output: Optional[str] = None) -> Optional[str]:
    """The one line to print for `error` if the user can fix it, else None (a bug).

    Looks at `error` and every exception it was raised from or while handling,
    first at the exception objects, then at their messages (a worker's error
    from another process arrives as text only). `output`, the job's output
    location, is named for a full disk or a refused write whose error names no
    path, as most writes' do (a write to an open file: Beam's sinks, pyarrow).
    """
    chain = list(_exception_chain(error))
    for exc in chain:
        message = _from_exception(exc, output)
        if message:
            return message
    for exc in chain:
        message = _from_text(str(exc), output)
        if message:
            return message
    return None


def was_interrupted(error: BaseException) -> bool:
    """True if `error` is Ctrl-C (KeyboardInterrupt), also when a runner wrapped it.

    Ctrl-C while a DoFn runs in process reaches the driver as
    RuntimeError("KeyboardInterrupt [while running 'STAGE']"): Beam's
    _reraise_augmented wraps every BaseException, and a KeyboardInterrupt has no
    message to append the stage to.
    """
    return any(
        isinstance(exc, KeyboardInterrupt) or _INTERRUPT_TEXT.search(str(exc))
        for exc in _exception_chain(error)
    )


def without_stage(message: str) -> str:
    """`message` without Beam's " [while running 'STAGE']" annotations."""
    return _STAGE.sub("", message).strip()


def _exception_chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what it was raised from (__cause__) or while handling (__context__)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _from_exception(exc: BaseException, output: Optional[str]) -> Optional[str]:
    if isinstance(exc, FlagError) or _is_user_input_error(exc):
        return without_stage(str(exc))
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        return _environment_message(exc.errno, exc.filename, output)
    return None


def _is_user_input_error(exc: BaseException) -> bool:
    # Only look once the module is loaded: if it is not, no UserInputError was
    # raised in this process, and importing it would import TensorFlow (seconds).
    errors = sys.modules.get("transforms.core.errors")
    return errors is not None and isinstance(exc, errors.UserInputError)


def _from_text(text: str, output: Optional[str]) -> Optional[str]:
    match = _USER_ERROR_LINE.search(text)
    if match:
        return without_stage(match.group(1))
    for match in _OS_ERROR_TEXT.finditer(text):
        code = int(match.group("errno"))
        if code in ENVIRONMENT_ERRNOS:
            path = match.group("path")
            return _environment_message(code, path[1:-1] if path else None, output)
    for code in ENVIRONMENT_ERRNOS:  # the C library's words alone, e.g. TensorFlow's errors
        if os.strerror(code) in text:
            return _environment_message(code, None, output)
    return None


def _environment_message(code: int, path, output: Optional[str]) -> str:
    """E.g. "no space left on device: /data/out/x.parquet"."""
    what = os.strerror(code).lower()
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if path:
        return f"{what}: {path}"
    if output:
        return f"{what} (the error names no path; the job writes under {output})"
    return f"{what} (the error names no path; --verbose shows the full error)"
