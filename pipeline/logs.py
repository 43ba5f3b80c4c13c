"""What the command logs: its own lines, not its libraries' start-up chatter (all with --verbose).

- TensorFlow: `TF_CPP_MIN_LOG_LEVEL` (set by the command unless --verbose, and
  inherited by the worker processes it starts) hides TensorFlow's C++ INFO logs,
  except those written while its shared libraries load: TensorFlow 2.21 logs
  them through Abseil before Abseil's logging is initialised, and those go to
  stderr whatever the level ("WARNING: All log messages before
  absl::InitializeLog() is called are written to STDERR", oneDNN, cudart_stub;
  tensorflow/tensorflow#100442). `import_tensorflow` imports TensorFlow with
  stderr captured at the file descriptor, and writes back every captured line
  but those the level would have hidden.
- Beam: its INFO logs (`BatchElements statistics`, the portable runner's job
  messages, which it logs on the root logger) are hidden, its warnings and
  errors are not, but for the one a local SDK worker always logs
  (`_BEAM_NOISE`).
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

# Abseil's line before its logging is initialised, and its (or TensorFlow's own) line
# format: "I0000 00:00:1796677091.712419   30142 port.cc:153] ..." (severity, date, time,
# thread, file:line), "2025-09-17 14:44:05.157831: I path/file.cc:32] ...".
_ABSL_NOT_INITIALIZED = "WARNING: All log messages before absl::InitializeLog() is called"
_CPP_LINE = re.compile(
    r"^(?:(?P<absl>[IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+: (?P<tsl>[IWEF]) )[\w./-]+:\d+\] "
)
_SEVERITIES = "IWEF"  # TF_CPP_MIN_LOG_LEVEL 1 hides I, 2 also W, 3 also E

# Beam's warnings that say nothing a user of this command can act on:
# - a local SDK worker (--direct_running_mode=multi_processing) is started without a
#   staging directory, so it has no pickled main session to load; this job defines
#   nothing in __main__ (its code is the installed package).
_BEAM_NOISE = ("No semi_persistent_directory found",)


def configure(verbose: bool) -> None:
    """Set up the process's logging for the command: INFO and up, ours; everything
    with `verbose`. Also sets TF_CPP_MIN_LOG_LEVEL for this process and the workers
    it starts (before TensorFlow is imported: it reads it once, on load)."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    root = logging.getLogger()
    if verbose:
        root.setLevel(logging.DEBUG)
    # Hidden unless --verbose: TensorFlow's and Beam's INFO logs, and Beam's log of a
    # failing DoFn's traceback (logged before it re-raises: the error reaches main()
    # either way, which prints a user error as one line and re-raises the rest).
    quiet = {
        "tensorflow": logging.WARNING,
        "absl": logging.WARNING,
        "apache_beam": logging.WARNING,
        "apache_beam.runners.common": logging.CRITICAL,
        # The round lines of an in-process run: pipeline.progress prints each round
        # from the job's metrics, on every runner.
        "transforms.core.lloyd": logging.WARNING,
    }
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else level)
    for handler in root.handlers:
        for f in list(handler.filters):
            if isinstance(f, BeamChatter):
                handler.removeFilter(f)
        if not verbose:
            handler.addFilter(BeamChatter())


class BeamChatter(logging.Filter):
    """Drops Beam's INFO and DEBUG records logged on other loggers than its modules'
    (the portable runner logs its job messages with `logging.log`, on the root
    logger), and Beam's warnings in `_BEAM_NOISE`, also as a worker's relayed record."""

    _beam_dir = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and self._from_beam(record.pathname):
            return False
        if record.levelno < logging.ERROR:
            message = record.getMessage()
            return not any(noise in message for noise in _BEAM_NOISE)
        return True

    @classmethod
    def _from_beam(cls, path: str) -> bool:
        if cls._beam_dir is None:
            beam = sys.modules.get("apache_beam")
            if beam is None:  # not imported yet: nothing logged from it yet
                return False
            cls._beam_dir = os.path.dirname(os.path.abspath(beam.__file__)) + os.sep
        return os.path.abspath(path).startswith(cls._beam_dir)


def is_load_chatter(line: str, level: int) -> bool:
    """Whether `line`, written to stderr while TensorFlow's libraries load, is one that
    TF_CPP_MIN_LOG_LEVEL=`level` is meant to hide."""
    if line.startswith(_ABSL_NOT_INITIALIZED):
        return level > 0
    match = _CPP_LINE.match(line)
    if not match:
        return False
    return _SEVERITIES.index(match.group("absl") or match.group("tsl")) < level


def min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (0 when unset or not a number)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def import_tensorflow():
    """`import tensorflow`, without the lines its libraries write to stderr as they load
    that TF_CPP_MIN_LOG_LEVEL should have hidden (see the module's docstring). Every
    other line written meanwhile (a Python warning, an import error's) is written
    back. A no-op once TensorFlow is imported."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    level = min_log_level()
    if level <= 0:
        import tensorflow

        return tensorflow
    with _stderr_filtered(lambda line: is_load_chatter(line, level)):
        import tensorflow

    return tensorflow


@contextlib.contextmanager
def _stderr_filtered(drop):
    """Send file descriptor 2 to a temporary file for the block, then write its lines
    but those `drop` refuses to the real stderr (also when the block raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                captured.seek(0)
                lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                kept = "".join(line for line in lines if not drop(line))
                if kept:
                    sys.stderr.write(kept)
                    sys.stderr.flush()
    finally:
        os.close(saved)
