"""Input files: matching a pattern, telling a file's format, opening it.

Files are opened through Beam's FileSystems, so gs:// and the other
supported schemes work as local paths do; a file may be compressed (.gz,
.bz2, ...: whatever Beam's CompressionTypes infers from the suffix).

A file that cannot be opened at all (gone, a dangling link, no permission)
raises `FileUnreadable`; the caller decides whether that stops the job or
becomes a whole-file rejection.
"""

import io
import os
import re
from typing import List

from apache_beam.io.filesystem import CompressedFile, CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

from transforms.core.errors import UserInputError

FORMATS = ("csv", "parquet", "tfrecord")
_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".tfr": "tfrecord",
}
# The suffixes Beam's CompressionTypes.detect_compression_type recognises.
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".xz", ".lzma")


class FileUnreadable(UserInputError):
    """A matched input file that cannot be opened: gone, a dangling link, no permission."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read file {path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # (pickled as its arguments, not its message)
        return FileUnreadable, (self.path, self.reason)


def format_from_path(path: str) -> str:
    """The format a file's suffix implies (compression suffixes ignored)."""
    name = path.lower()
    for comp in _COMPRESSION_SUFFIXES:
        if name.endswith(comp):
            name = name[: -len(comp)]
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise UserInputError(
        f"cannot tell the format of {path!r} from its suffix; pass --format {{{','.join(FORMATS)}}}"
    )


# Matching


def match_input(pattern: str) -> List[str]:
    """The files matching `pattern`, sorted; an error naming the pattern if none.

    A local pattern is matched as an absolute path, against the current
    directory: Beam's local filesystem matches a relative pattern's glob against
    the entries' paths under "." ("./part-1.csv"), so that a bare 'part-*.csv'
    matched nothing where './part-*.csv' did.

    Beam's local filesystem leaves out a matching entry it cannot stat (a
    dangling symbolic link): those are added back, so that reading them
    reports them instead of their rows going missing unnoticed.
    """
    from pipeline.workdir import absolute_path

    where = pattern  # the user's pattern, in messages
    pattern = absolute_path(pattern)
    try:
        result = FileSystems.match([pattern])[0]
    except Exception as e:  # noqa: BLE001 -- BeamIOError: a bad path, an unreachable bucket
        raise UserInputError(f"cannot list input {where!r}: {e}") from None
    paths = {m.path for m in result.metadata_list if m.size_in_bytes >= 0}
    paths.update(_unstattable_local_matches(pattern))
    if not paths:
        raise UserInputError(f"no file matches --input {where!r}")
    return sorted(paths)


def _unstattable_local_matches(pattern: str) -> List[str]:
    """Local entries matching `pattern` (Beam's glob rules) whose size cannot be read."""
    try:
        filesystem = FileSystems.get_filesystem(pattern)
    except ValueError:
        return []
    if not isinstance(filesystem, LocalFileSystem):
        return []
    prefix = re.match(r"^[^[*?]*", pattern).group(0)
    if prefix == pattern:  # no glob: the one path, if it is there but cannot be stat'ed
        return [pattern] if os.path.lexists(pattern) and not os.path.exists(pattern) else []
    root = os.path.dirname(prefix) or "."
    # Directory levels a match can be below `root` (any, with "**"): no deeper walk.
    levels = None if "**" in pattern else pattern[len(root) :].strip("/").count("/")
    found = []
    for directory, subdirs, names in os.walk(root):
        relative = os.path.relpath(directory, root)
        depth = 0 if relative == "." else relative.count(os.sep) + 1
        if levels is not None and depth >= levels:
            subdirs[:] = []
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                found.append(FileMetadata(path, 0))
    return [m.path for m in filesystem.match_files(found, pattern)]


# Opening


class _RawStream(io.RawIOBase):
    """A readable raw stream over an object with read(n) (Beam's CompressedFile has no
    readinto, writable, ...): wrapped in io.BufferedReader, it is a file object that
    io.TextIOWrapper and pyarrow both read."""

    def __init__(self, f):
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._f.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


def open_raw(path: str):
    """`path`'s bytes as stored, a seekable file; FileUnreadable if it cannot be opened.

    The first byte is read here, so that a file that is gone or forbidden fails
    now (GCS opens lazily), before any of it is parsed: a failure after this
    point is the content's.
    """
    try:
        f = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:  # noqa: BLE001 -- any failure to open is the file's
        raise FileUnreadable(path, _describe(e)) from None
    try:
        f.read(1)
        f.seek(0)
    except Exception as e:  # noqa: BLE001
        f.close()
        raise FileUnreadable(path, _describe(e)) from None
    return f


def open_stream(path: str) -> io.BufferedReader:
    """`path` decompressed as its suffix says (Beam's CompressionTypes), buffered, for
    io.TextIOWrapper and pyarrow's CSV reader; FileUnreadable as open_raw."""
    f = open_raw(path)
    compression = CompressionTypes.detect_compression_type(path)
    if compression != CompressionTypes.UNCOMPRESSED:
        f = CompressedFile(f, compression_type=compression)
    return io.BufferedReader(_RawStream(f), 1 << 20)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
