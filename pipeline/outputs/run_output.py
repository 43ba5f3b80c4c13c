"""A run's output directory: checked before the run, staged during it, published whole at its end.

The protocol, for local paths and object stores (gs://, ...) alike:

- Before anything runs, the driver refuses an output that is a file, that
  holds or overlaps one of the run's inputs (input files, the model, an --init
  file), that the input pattern would match, and a non-empty one ("non-empty":
  any entry, file or directory) without --overwrite. Nothing is deleted then.
- It takes the output's lock, `OUTPUT.shardmeans-lock`, a small JSON file that
  names the run; a second run into the same output is refused while it exists.
- The job writes every result under a directory of its own run,
  `OUTPUT.incomplete-RUN/`, beside the output.
- The job's last step publishes: it writes `_SUCCESS` (the run id and every
  file with its size) into the run's directory, then puts that directory in
  place of OUTPUT, then releases the lock. On a local filesystem that is two
  renames (the old output aside, the new one in) and the old tree's removal,
  so a reader sees the old tree or the new one, never a mix. An object store
  has no rename of a directory: there the old `_SUCCESS` is deleted first, the
  old files next, the run's files are moved in, and `_SUCCESS` is written last;
  a reader that checks `_SUCCESS` (as `score` does) never takes a partly
  replaced output for a finished one. Publishing again after a retry finishes
  what a first attempt began.
- A run that fails or is interrupted deletes its own directory and its lock,
  or says in one line where they are; the previous output is untouched.

The lock is exclusive on a local filesystem (a hard link of its complete record,
which fails where the lock exists; `O_EXCL` where links are not supported). Beam's FileSystems
offer no create-if-absent on object stores, so there the lock is written and
read back: two runs started within the same moment can both pass it.
"""

import datetime
import errno
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import uuid
from typing import Iterable, List, NamedTuple, Optional

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from transforms.core.errors import UserInputError

MARKER = "_SUCCESS"
LOCK_SUFFIX = ".shardmeans-lock"
STAGE_INFIX = ".incomplete-"
REPLACED_INFIX = ".replaced-"


class RunOutput(NamedTuple):
    """Where one run writes (`stage`) and what it publishes to (`output`); all absolute."""

    output: str
    run_id: str
    command: str  # "fit" or "score"
    overwrite: bool
    local_lock: bool  # the lock may be taken over once its process is gone (in-process runners)

    @property
    def stage(self) -> str:
        return self.output + STAGE_INFIX + self.run_id

    @property
    def lock(self) -> str:
        return self.output + LOCK_SUFFIX

    @property
    def replaced(self) -> str:
        return self.output + REPLACED_INFIX + self.run_id


def new_run_id() -> str:
    """A run id that sorts by start time: 20261207T181500-3fa9c2."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def _strip_slash(path: str) -> str:
    return path.rstrip("/") if path.rstrip("/") else path


def begin(
    output: str,
    command: str,
    overwrite: bool,
    inputs: Iterable[str],
    input_pattern: Optional[str] = None,
    in_process: bool = True,
) -> RunOutput:
    """Check `output` against the run's inputs, take its lock; return the run's RunOutput.

    `inputs`: every file or directory the run reads (matched input files, the
    model directory, an --init file). `input_pattern`: the --input pattern,
    which must not match anything the run writes. `in_process`: the job runs
    in this process or its children (the DirectRunner), so a lock whose
    process is gone on this host is a killed run's and may be taken over.
    UserInputError names what is wrong; nothing is deleted here.
    """
    output = _strip_slash(output)
    if _is_local(output):
        output = os.path.abspath(output)
        if os.path.dirname(output) == output:
            raise UserInputError(f"--output {output} is a filesystem root; name a directory in it")
        if os.path.isfile(output):
            raise UserInputError(f"--output {output} is a file; name a directory")
    _check_overlap(output, inputs)
    run = RunOutput(output, new_run_id(), command, overwrite, in_process)
    if input_pattern is not None:
        _check_pattern(input_pattern, run)
    try:
        _take_lock(run)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # The lock is the run's first write: name the directory, not the lock's file.
        raise UserInputError(
            f"--output {output}: cannot write in {posixpath.dirname(run.lock)}: {e.strerror}"
        ) from None
    try:
        if not overwrite and _entries(output):
            raise UserInputError(
                f"output directory {output} exists and is not empty; pass "
                f"--overwrite to replace it once this run has succeeded"
            )
    except BaseException:
        release(run)
        raise
    return run


def _real(path: str) -> str:
    return os.path.realpath(path) if _is_local(path) else _strip_slash(path)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _check_overlap(output: str, inputs: Iterable[str]) -> None:
    """Refuse an output that is, holds or lies inside anything the run reads, and inputs
    among the output's siblings that runs write and delete (a run's directory, a
    replaced output, the lock): a stale run's directory is removed by the next run."""
    real_output = _real(output)
    siblings = tuple(real_output + s for s in (STAGE_INFIX, REPLACED_INFIX, LOCK_SUFFIX))
    for path in inputs:
        for candidate in {_strip_slash(path), _real(path)}:
            if (
                _inside(candidate, real_output)
                or _inside(real_output, candidate)
                or candidate.startswith(siblings)
            ):
                raise UserInputError(
                    f"--output {output} overlaps the input {path}: a run never writes where "
                    f"it reads (publishing would replace the input); choose another --output"
                )


def _check_pattern(pattern: str, run: RunOutput) -> None:
    """Refuse an input pattern that would match the run's own files (a rerun would read them)."""
    if _is_local(pattern):
        pattern = os.path.abspath(pattern)
    matches = re.compile(FileSystem.translate_pattern(pattern)).match
    for path in (
        run.lock,
        run.stage + "/" + MARKER,
        run.output + "/" + MARKER,
        run.output + "/assignments/part-00000-of-00001.csv",
    ):
        if matches(path):
            raise UserInputError(
                f"--input {pattern} would also match this run's output files "
                f"(e.g. {path}); choose an --output outside it"
            )


def _entries(directory: str) -> List[str]:
    """Anything under `directory`: files and, on a local filesystem, directories too."""
    if _is_local(directory):
        try:
            return os.listdir(directory)
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            return [directory]
    try:
        found = FileSystems.match([directory + "/**"], limits=[2])[0].metadata_list
    except Exception:  # noqa: BLE001 -- a listing that fails finds nothing to keep
        return []
    return [m.path for m in found if m.path.rstrip("/") != directory]


# The lock ------------------------------------------------------------------


def _lock_record(run: RunOutput) -> dict:
    return {
        "run_id": run.run_id,
        "command": run.command,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "in_process": run.local_lock,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "stage": run.stage,
    }


def _read_json(path: str) -> Optional[dict]:
    try:
        with FileSystems.open(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except Exception:  # noqa: BLE001 -- absent, unreadable or not ours: no record
        return None


def _take_lock(run: RunOutput) -> None:
    record = json.dumps(_lock_record(run), indent=2).encode("utf-8")
    if _is_local(run.lock):
        os.makedirs(os.path.dirname(run.lock), exist_ok=True)
        # Written whole under a name of its own, then linked in place: a link fails
        # if the lock exists (as O_EXCL would), and a lock that exists is complete,
        # so no reader sees an empty record, and no kill leaves one behind.
        pending = f"{run.lock}.{run.run_id}"
        with open(pending, "wb") as f:
            f.write(record)
        try:
            for attempt in range(2):
                try:
                    _link_or_create(pending, run.lock, record)
                except FileExistsError:
                    if attempt == 0 and _take_over_stale(run):
                        continue
                    raise UserInputError(_locked_message(run)) from None
                return
        finally:
            os.remove(pending)
    if FileSystems.exists(run.lock):
        raise UserInputError(_locked_message(run))
    with FileSystems.create(run.lock) as f:
        f.write(record)
    if (_read_json(run.lock) or {}).get("run_id") != run.run_id:
        raise UserInputError(_locked_message(run))


def _link_or_create(pending: str, lock: str, record: bytes) -> None:
    """Create `lock` holding `record` unless it exists (FileExistsError): a hard link of
    `pending`, or on a filesystem without links, O_EXCL and a write."""
    try:
        os.link(pending, lock)
        return
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
            raise
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(record)


def _locked_message(run: RunOutput) -> str:
    held = _read_json(run.lock) or {}
    who = (
        f"run {held.get('run_id')} (pid {held.get('pid')} on {held.get('host')}, "
        f"started {held.get('started')})"
        if held
        else "another run"
    )
    return (
        f"{who} is writing to {run.output}: wait for it to end, or, if it is no longer "
        f"running, delete {run.lock}" + (f" and {held['stage']}" if held.get("stage") else "")
    )


def _take_over_stale(run: RunOutput) -> bool:
    """Remove the lock (and the run directory) of a killed in-process run on this host.

    Only a run that ran in its driver's process (the DirectRunner) dies with
    it; a remote runner's job may outlive its driver, so its lock is left to
    the user.
    """
    held = _read_json(run.lock)
    if not held or not held.get("in_process") or held.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(held["pid"]), 0)
        return False  # still running
    except ProcessLookupError:
        pass
    except (PermissionError, ValueError, KeyError, TypeError):
        return False
    stage = held.get("stage") or ""
    if stage.startswith(run.output + STAGE_INFIX) and os.path.isdir(stage):
        shutil.rmtree(stage)
    os.remove(run.lock)
    logging.getLogger(__name__).warning(
        "run %s into %s ended without finishing (its process is gone): removed its lock "
        "and its files",
        held.get("run_id"),
        run.output,
    )
    return True


def release(run: RunOutput) -> None:
    """Remove the lock if it is this run's."""
    held = _read_json(run.lock)
    if held is not None and held.get("run_id") == run.run_id:
        FileSystems.delete([run.lock])


# Publishing (the job's last step) ----------------------------------------------


def publish(unused_element, run: RunOutput, **after) -> str:
    """Put the run's directory in place of OUTPUT; return OUTPUT. Safe to run again.

    A beam.Map body: `after` are side inputs that order this step after every
    writer of the run.
    """
    del unused_element, after
    _publish(run, by_rename=_is_local(run.output))
    release(run)
    logging.getLogger(__name__).info("published run %s to %s", run.run_id, run.output)
    return run.output


def _publish(run: RunOutput, by_rename: bool) -> None:
    """Publish by renames (a local filesystem) or by copies (any filesystem)."""
    if not _published(run):
        manifest = _manifest(run)
        if by_rename:
            _publish_by_rename(run)
        else:
            _publish_by_copy(run, manifest)
    if _is_local(run.replaced) and os.path.lexists(run.replaced):
        _remove_tree(run.replaced)


def _published(run: RunOutput) -> bool:
    marker = _read_json(FileSystems.join(run.output, MARKER))
    return (
        marker is not None
        and marker.get("run_id") == run.run_id
        and not FileSystems.exists(FileSystems.join(run.stage, MARKER))
    )


def _staged_files(run: RunOutput) -> List[dict]:
    """[{'path': relative path, 'bytes': size}] of every file the run wrote, sorted."""
    found = FileSystems.match([run.stage + "/**"])[0].metadata_list
    prefix = run.stage + "/"
    files = [
        {"path": m.path[len(prefix) :], "bytes": m.size_in_bytes}
        for m in found
        if m.path.startswith(prefix) and not m.path.endswith("/")
    ]
    return sorted((f for f in files if f["path"] != MARKER), key=lambda f: f["path"])


def _manifest(run: RunOutput) -> dict:
    """The run's `_SUCCESS` record, written into its directory once (a retry reads it back)."""
    path = FileSystems.join(run.stage, MARKER)
    manifest = _read_json(path)
    if manifest is not None and manifest.get("run_id") == run.run_id:
        return manifest
    if not FileSystems.exists(run.stage):
        raise RuntimeError(f"run {run.run_id} has no files at {run.stage} to publish")
    manifest = {
        "run_id": run.run_id,
        "command": run.command,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": _staged_files(run),
    }
    _write_json(path, manifest)
    return manifest


def _write_json(path: str, value: dict) -> None:
    with FileSystems.create(path) as f:
        f.write(json.dumps(value, indent=2).encode("utf-8"))


def _refuse_foreign_output(run: RunOutput) -> None:
    """Without --overwrite, an output that someone filled during the run is not replaced."""
    if not run.overwrite and _entries(run.output):
        raise UserInputError(
            f"{run.output} was filled by something else during this run, "
            f"which did not replace it (no --overwrite)"
        )


def _publish_by_rename(run: RunOutput) -> None:
    """Local filesystem: the old output aside, the run's directory in, each one rename."""
    if os.path.lexists(run.output) and not os.path.lexists(run.replaced):
        _refuse_foreign_output(run)
        os.rename(run.output, run.replaced)
    os.makedirs(os.path.dirname(run.output), exist_ok=True)
    os.rename(run.stage, run.output)


def _remove_tree(path: str) -> None:
    if os.path.islink(path) or not os.path.isdir(path):
        os.remove(path)
    else:
        shutil.rmtree(path)


def _publish_by_copy(run: RunOutput, manifest: dict) -> None:
    """Any filesystem: the old marker out first, the old files, the run's files in, the marker last."""
    old_marker = FileSystems.join(run.output, MARKER)
    old = _read_json(old_marker)
    if old is None or old.get("run_id") != run.run_id:
        _refuse_foreign_output(run)
        if FileSystems.exists(old_marker):
            FileSystems.delete([old_marker])
    ours = {f["path"] for f in manifest["files"]}
    prefix = run.output + "/"
    stale = [
        m.path
        for m in FileSystems.match([run.output + "/**"])[0].metadata_list
        if m.path.startswith(prefix) and m.path[len(prefix) :] not in ours
    ]
    if stale:
        FileSystems.delete(stale)
    sources, destinations = [], []
    for f in manifest["files"]:
        source = FileSystems.join(run.stage, f["path"])
        if FileSystems.exists(source):  # (else moved by an earlier attempt)
            sources.append(source)
            destinations.append(FileSystems.join(run.output, f["path"]))
    for destination in destinations:
        _make_parent(destination)
    if sources:
        FileSystems.rename(sources, destinations)
    _write_json(old_marker, manifest)
    FileSystems.delete([run.stage])


def _make_parent(path: str) -> None:
    if FileSystems.get_filesystem(path).has_dirs():
        os.makedirs(os.path.dirname(path), exist_ok=True)


# After the job -------------------------------------------------------------------


def check_published(run: RunOutput) -> dict:
    """The `_SUCCESS` record of this run at OUTPUT; RuntimeError if OUTPUT holds another run's."""
    marker = _read_json(FileSystems.join(run.output, MARKER))
    if marker is None or marker.get("run_id") != run.run_id:
        raise RuntimeError(
            f"the job ended but {run.output} does not hold run {run.run_id}'s "
            f"results (its {MARKER} names {marker and marker.get('run_id')})"
        )
    return marker


def abort(run: RunOutput, work_dirs: Iterable[str] = ()) -> Optional[str]:
    """After a failed or interrupted run: remove its own files and its lock.

    Returns None when everything went, else one line that says what is left
    and where. Never touches OUTPUT itself.
    """
    left = []
    for path in [run.stage, *work_dirs]:
        try:
            if FileSystems.exists(path):
                FileSystems.delete([path])
        except Exception:  # noqa: BLE001 -- reported below, the run's own error matters more
            left.append(path)
    try:
        release(run)
    except Exception:  # noqa: BLE001
        left.append(run.lock)
    if left:
        return f"this run's unfinished files could not all be removed: {', '.join(left)}"
    return None
