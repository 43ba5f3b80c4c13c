"""Reading CSV, Parquet and TFRecord (tf.Example) files as Arrow record batches, and the
input's layout: the columns of all its files.

Every reader yields `Chunk`s: a record batch of the columns as read, with the
1-based row number of each row in its file, plus the rows the format itself
could not parse (a CSV row with the wrong number of fields, a TFRecord record
that is not a tf.Example). Files are opened
through Beam's FileSystems (CSV, Parquet) or TensorFlow's (TFRecord), so
gs:// and the other supported schemes work as local paths do; a CSV file may be
compressed (.gz, .bz2, ... : whatever Beam's CompressionTypes infers from the suffix).

A file that cannot be opened at all (gone, a dangling link, no permission)
raises `FileUnreadable`; the caller decides whether that stops the job or
becomes a whole-file rejection. A file that opens but is not in its format
raises a plain UserInputError.
"""
import csv
import io
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressedFile, CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

from transforms.errors import UserInputError

FORMATS = ("csv", "parquet", "tfrecord")
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
             ".tfrecord": "tfrecord", ".tfrecords": "tfrecord", ".tfr": "tfrecord"}
# The suffixes Beam's CompressionTypes.detect_compression_type recognises.
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".xz", ".lzma")

# Threads reading Parquet footers, CSV headers and TFRecord samples at graph
# construction: each is a small read, mostly waiting on storage (gs://).
_PROBE_THREADS = 32
# Rows of each file sampled: a TFRecord file's features, a CSV column's values.
_PROBE_ROWS = 1000
# A CSV column is sampled from at most this many files for its numeric kind.
_PROBE_MAX_FILES = 64

_CSV_BLOCK_BYTES = 1 << 22
# A CSV record longer than a block is read by retrying with blocks 4x larger, up to this.
_CSV_MAX_BLOCK_BYTES = 1 << 30

# The usual decimal grammar (sign, digits, point, exponent) or NaN / infinity words,
# applied to trimmed text: what pyarrow's string -> float64 cast accepts, minus
# its "nan(...)" forms; Python's float() would also take "1_000" and non-ASCII digits.
_NUMBER = r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|nan|inf|infinity)$"


class Chunk(NamedTuple):
    """Rows of one file: `batch` (columns as read), `rows` int64 [n] (1-based row numbers,
    ascending, not necessarily consecutive), `unparsed` [(row number, raw text, reason)]
    for rows the format could not split or decode."""

    path: str
    batch: pa.RecordBatch
    rows: np.ndarray
    unparsed: list


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
        f"cannot tell the format of {path!r} from its suffix; pass --format {{{','.join(FORMATS)}}}")


# ----------------------------------------------------------------------------- matching

def match_input(pattern: str) -> List[str]:
    """The files matching `pattern`, sorted; an error naming the pattern if none.

    Beam's local filesystem leaves out a matching entry it cannot stat (a
    dangling symbolic link): those are added back, so that reading them
    reports them instead of their rows going missing unnoticed.
    """
    try:
        result = FileSystems.match([pattern])[0]
    except Exception as e:  # Beam raises BeamIOError for a bad path or an unreachable bucket
        raise UserInputError(f"cannot list input {pattern!r}: {e}") from None
    paths = {m.path for m in result.metadata_list if m.size_in_bytes >= 0}
    paths.update(_unstattable_local_matches(pattern))
    if not paths:
        raise UserInputError(f"no file matches --input {pattern!r}")
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
    levels = None if "**" in pattern else pattern[len(root):].strip("/").count("/")
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


# ----------------------------------------------------------------------------- opening

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
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


def _open_raw(path: str):
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


def _open_stream(path: str) -> io.BufferedReader:
    """`path` decompressed as its suffix says (Beam's CompressionTypes), buffered, for
    io.TextIOWrapper and pyarrow's CSV reader; FileUnreadable as _open_raw."""
    f = _open_raw(path)
    compression = CompressionTypes.detect_compression_type(path)
    if compression != CompressionTypes.UNCOMPRESSED:
        f = CompressedFile(f, compression_type=compression)
    return io.BufferedReader(_RawStream(f), 1 << 20)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# ----------------------------------------------------------------------------- reading

def read_chunks(path: str, fmt: str, batch_rows: int) -> Iterator[Chunk]:
    """Chunks of at most `batch_rows` rows of one file.

    FileUnreadable if the file cannot be opened, only ever before its first
    chunk; UserInputError if it is not in its format.
    """
    reader = {"csv": _read_csv, "parquet": _read_parquet, "tfrecord": _read_tfrecord}[fmt]
    started = False
    try:
        for chunk in reader(path, batch_rows):
            started = True
            yield chunk
    except FileUnreadable as e:
        if not started:
            raise
        # Gone part-way (a CSV file reopened with larger blocks): its first rows were
        # yielded, so it cannot be rejected whole.
        raise UserInputError(f"{e} (after some of its rows were read)") from None
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001 -- the file's content: named as the file's error
        raise UserInputError(f"cannot read {fmt} file {path}: {type(e).__name__}: "
                             f"{' '.join(str(e).split())}") from None


def csv_header(path: str) -> List[str]:
    """The column names of a CSV file: its first record, without a UTF-8 byte order mark;
    [] for an empty file. UserInputError when a name appears twice."""
    with _open_stream(path) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        header = next(csv.reader(text), [])
    seen = set()
    for name in header:
        if name in seen:
            raise UserInputError(f"{path}: the header names column {name!r} twice")
        seen.add(name)
    return header


def _read_csv(path: str, batch_rows: int) -> Iterator[Chunk]:
    """Every column as a string: a bad value rejects its row, not the whole file.

    A record larger than pyarrow's block makes it fail ("straddles two block
    boundaries"): the file is read again with blocks 4x larger, from where it
    got to (the rows already yielded are skipped).
    """
    header = csv_header(path)
    if not header:
        logging.warning("%s is empty: no header, no rows", path)
        return
    done = 0  # the last row number yielded
    block_bytes = _CSV_BLOCK_BYTES
    while True:
        try:
            for batch, rows, unparsed in _csv_blocks(path, header, block_bytes):
                if done:  # a retry: skip what the earlier attempt yielded
                    keep = np.flatnonzero(rows > done)
                    batch, rows = batch.take(pa.array(keep)), rows[keep]
                    unparsed = [u for u in unparsed if u[0] > done]
                for start in range(0, batch.num_rows, batch_rows):
                    yield Chunk(path, batch.slice(start, batch_rows),
                                rows[start:start + batch_rows], unparsed if start == 0 else [])
                if unparsed and batch.num_rows == 0:
                    yield Chunk(path, batch, rows, unparsed)
                done = max([done, *rows[-1:].tolist(), *(u[0] for u in unparsed)])
            return
        except pa.ArrowInvalid as e:
            if "straddl" not in str(e):
                raise
            if block_bytes >= _CSV_MAX_BLOCK_BYTES:
                raise UserInputError(
                    f"{path}, row {done + 1} or the next: a CSV record larger than "
                    f"{_CSV_MAX_BLOCK_BYTES >> 20} MB (an unclosed quote?)") from None
            block_bytes *= 4


def _csv_blocks(path: str, header: List[str], block_bytes: int
                ) -> Iterator[Tuple[pa.RecordBatch, np.ndarray, list]]:
    """Each block of a CSV file: (its rows, all columns string; their row numbers int64 [n];
    the rows of the block with the wrong number of fields, as Chunk.unparsed)."""
    import pyarrow.csv as pacsv

    unparsed = []

    def on_bad_row(row):
        # row.number counts the file's records from 1, the header included.
        unparsed.append((row.number - 1, row.text,
                         f"expected {row.expected_columns} fields, found {row.actual_columns}"))
        return "skip"

    with _open_stream(path) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False, column_names=header, skip_rows=1,
                                           block_size=block_bytes),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_bad_row),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header}))
        next_row = 1
        for batch in reader:
            bad = [u[0] for u in unparsed]
            numbers = np.arange(next_row, next_row + batch.num_rows + len(bad))
            next_row += len(numbers)
            yield batch, numbers[~np.isin(numbers, bad)], unparsed
            unparsed = []
        if unparsed:  # bad rows after the last block
            yield (pa.RecordBatch.from_pylist([], schema=reader.schema),
                   np.zeros(0, np.int64), unparsed)


def _parquet_batches(parquet, batch_size: int, columns=None) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `batch_size` rows of a pyarrow.parquet.ParquetFile, one row
    group at a time.

    Not one `iter_batches` over the whole file: with pyarrow 25 that holds on
    to memory (outside Arrow's pool) in proportion to the rows read until it
    ends, about the file's decoded size; one row group at a time holds one.
    """
    for group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns)


def _is_empty(f) -> bool:
    """Whether a seekable file at its start holds no byte (a 0-byte shard: no rows, not
    a malformed Parquet file)."""
    empty = not f.read(1)
    f.seek(0)
    return empty


def _read_parquet(path: str, batch_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    with _open_raw(path) as f:
        if _is_empty(f):
            logging.warning("%s is empty: no rows", path)
            return
        next_row = 1
        for batch in _parquet_batches(pq.ParquetFile(f), batch_rows):
            yield Chunk(path, decode_dictionaries(batch),
                        np.arange(next_row, next_row + batch.num_rows), [])
            next_row += batch.num_rows


def decode_dictionaries(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Dictionary-encoded columns (pandas `category`) as plain arrays of their values."""
    if not any(pa.types.is_dictionary(t) for t in batch.schema.types):
        return batch
    columns = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c
               for c in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _unwrap_lists(batch: pa.RecordBatch) -> pa.RecordBatch:
    """tf.Example features are lists: a column with at most one value a row becomes scalar.

    A column with longer lists stays a list; validation rejects a row whose
    selected feature is not exactly one value. (A column of only empty
    features decodes as type null: it stays so.)
    """
    columns = []
    for col in batch.columns:
        if not _is_list(col.type):
            columns.append(col)
            continue
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
        if lengths.size and lengths.max() > 1:
            columns.append(col)
            continue
        starts = col.offsets.to_numpy()[:-1]
        columns.append(pc.take(col.values, pa.array(starts, mask=lengths != 1)))
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _tfrecord_batches(path: str, batch_rows: int) -> Iterator[List[bytes]]:
    """The records of a TFRecord file, `batch_rows` at a time; FileUnreadable if the file
    cannot be opened (TensorFlow opens it at the first read)."""
    import tensorflow as tf

    compression = "GZIP" if path.endswith(".gz") else ""
    records = iter(tf.data.TFRecordDataset(path, compression_type=compression)
                   .batch(batch_rows).as_numpy_iterator())
    try:
        first = next(records, None)
    except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as e:
        raise FileUnreadable(path, f"{type(e).__name__}: {e.message}") from None
    if first is None:
        return
    yield list(first)
    for batch in records:
        yield list(batch)


def _read_tfrecord(path: str, batch_rows: int) -> Iterator[Chunk]:
    next_row = 1
    for records in _tfrecord_batches(path, batch_rows):
        for index, batch, unparsed in decode_examples(records):
            rows = next_row + index
            yield Chunk(path, _unwrap_lists(batch), rows,
                        [(next_row + i, None, why) for i, why in unparsed])
        next_row += len(records)


def decode_examples(records: List[bytes]
                    ) -> Iterator[Tuple[np.ndarray, pa.RecordBatch, List[Tuple[int, str]]]]:
    """Serialized tf.Examples -> (indices int64 [m] of the records decoded, their record
    batch of list columns, [(index, reason)] of records that are not tf.Examples), one or
    more groups whose indices together cover all records.

    tfx_bsl's decoder refuses a batch in which a feature is an int64_list in
    one record and a float_list (or bytes_list) in another. Then the records
    are grouped by the kind each such feature has in them (a record without
    the feature joins the feature's most common kind) and each group is decoded
    alone: validation then reads ints and floats alike as numbers, and rejects
    the rows whose kind cannot be one (bytes where numbers are expected).
    """
    from tfx_bsl.coders import example_coder

    decoder = example_coder.ExamplesToRecordBatchDecoder()
    try:
        yield np.arange(len(records)), decoder.DecodeBatch(records), []
        return
    except RuntimeError:
        pass
    kinds, unparsed = _feature_kinds(records)
    mixed = {name: max(set(k.values()), key=list(k.values()).count)
             for name, k in kinds.items() if len(set(k.values())) > 1}
    groups: Dict[tuple, List[int]] = {}
    bad = {i for i, _ in unparsed}
    for i in range(len(records)):
        if i not in bad:
            key = tuple(kinds[name].get(i, common) for name, common in mixed.items())
            groups.setdefault(key, []).append(i)
    for index in groups.values():
        yield np.array(index), decoder.DecodeBatch([records[i] for i in index]), []
    if unparsed:
        yield np.zeros(0, np.int64), pa.RecordBatch.from_pylist([]), unparsed


def _feature_kinds(records: List[bytes]) -> Tuple[Dict[str, Dict[int, str]], List[Tuple[int, str]]]:
    """({feature: {record index: 'int64_list' | 'float_list' | 'bytes_list'}} for the records
    that hold a value of it, [(index, reason)] of the records that are not tf.Examples)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    kinds: Dict[str, Dict[int, str]] = {}
    unparsed = []
    for i, record in enumerate(records):
        try:
            example = example_pb2.Example.FromString(record)
        except DecodeError:
            unparsed.append((i, "not a tf.Example record"))
            continue
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            if kind is not None:
                kinds.setdefault(name, {})[i] = kind
    return kinds, unparsed


# ----------------------------------------------------------------------------- numbers in text

def parse_numbers(text: pa.Array) -> Tuple[pa.Array, np.ndarray]:
    """Trimmed text (null: no value) as numbers: (float64 [n], null where there is no number;
    bool [n], True where the text is there but is not a number).

    One vectorized cast when every value is a number (the usual case); else the
    decimal grammar picks the values that are, and those are cast.
    """
    try:
        return pc.cast(text, pa.float64()), np.zeros(len(text), dtype=bool)
    except pa.ArrowInvalid:
        pass
    is_number = pc.match_substring_regex(text, _NUMBER, ignore_case=True)
    values = pc.cast(pc.if_else(is_number, text, pa.scalar(None, text.type)), pa.float64())
    non_numeric = pc.invert(pc.fill_null(is_number, True)).to_numpy(zero_copy_only=False)
    return values, non_numeric


def _non_empty(text: pa.Array) -> pa.Array:
    """The values of a string column that hold text once trimmed, trimmed."""
    text = pc.utf8_trim_whitespace(text)
    return text.filter(pc.fill_null(pc.not_equal(text, ""), False))


def _mostly_numbers(text: pa.Array) -> bool:
    """Whether most of these (non-empty, trimmed) values are numbers: a stray bad value
    rejects its row, it does not change the column's kind."""
    if not len(text):
        return False
    _, non_numeric = parse_numbers(text)
    return int(non_numeric.sum()) * 2 < len(text)


# ----------------------------------------------------------------------------- the input's layout

class FileColumns(NamedTuple):
    """What one input file says about its columns.

    types: {column: Arrow type}, in the file's order (CSV: all string; TFRecord:
           from its first records, scalar when none holds more than one value).
    rows: rows known to be there (Parquet: all; TFRecord: those sampled, at most
          _PROBE_ROWS; CSV: None, unknown). Types of a file without rows count
          only for columns no file with rows has.
    values: TFRecord: {column: sampled rows holding a value}; else {}.
    unreadable: why the file cannot be opened, else None.
    """

    path: str
    types: Dict[str, pa.DataType]
    rows: Optional[int]
    values: Dict[str, int]
    unreadable: Optional[str]


def file_columns(path: str, fmt: str) -> FileColumns:
    """The columns of one file: a Parquet footer, a CSV header, a TFRecord file's first records."""
    try:
        if fmt == "parquet":
            return _parquet_columns(path)
        if fmt == "csv":
            types = {name: pa.string() for name in csv_header(path)}
            return FileColumns(path, types, None, {}, None)
        return _tfrecord_columns(path)
    except FileUnreadable as e:
        return FileColumns(path, {}, None, {}, e.reason)
    except UserInputError:
        raise
    except Exception as e:  # noqa: BLE001 -- not in its format: the file's error
        raise UserInputError(f"cannot read {fmt} file {path}: {type(e).__name__}: "
                             f"{' '.join(str(e).split())}") from None


def _parquet_columns(path: str) -> FileColumns:
    import pyarrow.parquet as pq

    with _open_raw(path) as f:
        if _is_empty(f):
            return FileColumns(path, {}, 0, {}, None)
        parquet = pq.ParquetFile(f)
        schema, rows = parquet.schema_arrow, parquet.metadata.num_rows
    types = {field.name: (field.type.value_type if pa.types.is_dictionary(field.type)
                          else field.type) for field in schema}
    return FileColumns(path, types, rows, {}, None)


def _tfrecord_columns(path: str) -> FileColumns:
    """Each feature's value type in the first _PROBE_ROWS records, a list type when a record
    holds several values. Ints and floats together are float64; bytes and numbers
    together, the kind more records hold."""
    records = next(_tfrecord_batches(path, _PROBE_ROWS), [])
    # column -> [(value type, rows holding values, most values in a row)], one per group
    parts: Dict[str, List[Tuple[pa.DataType, int, int]]] = {}
    for _, batch, _ in decode_examples(records):
        for name, col in zip(batch.schema.names, batch.columns):
            if not _is_list(col.type):  # type null: only empty features
                parts.setdefault(name, []).append((pa.null(), 0, 0))
                continue
            lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
            parts.setdefault(name, []).append(
                (col.type.value_type, int((lengths > 0).sum()), int(lengths.max(initial=0))))
    types, values = {}, {}
    for name, observed in parts.items():
        observed = _majority(observed, lambda part: part[0], lambda part: part[1])
        kind = observed[0][0]
        for part in observed[1:]:
            kind = unify_types(kind, part[0])
        types[name] = pa.large_list(kind) if max(p[2] for p in observed) > 1 else kind
        values[name] = sum(p[1] for p in observed)
    return FileColumns(path, types, len(records), values, None)


def _majority(items: list, kind_of, weight_of) -> list:
    """The `items` of numbers or those of other kinds (tf.Example bytes), whichever weigh
    more (numbers on a tie): a tf.Example feature is one or the other."""
    def is_number(kind):
        kind = kind.value_type if _is_list(kind) else kind
        return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)

    numbers = [item for item in items if is_number(kind_of(item))]
    others = [item for item in items if not is_number(kind_of(item))]
    if not numbers or not others:
        return items
    weight = lambda group: sum(weight_of(item) for item in group)  # noqa: E731
    return numbers if weight(numbers) >= weight(others) else others


def unify_types(a: pa.DataType, b: pa.DataType, lists_take_scalars: bool = False
                ) -> Optional[pa.DataType]:
    """The type both `a` and `b` cast to without surprise, or None.

    null with anything; integers of any width -> int64; integers and floats ->
    float64; string / large_string -> large_string (binary likewise); lists by
    their values. With `lists_take_scalars` (tf.Example, where every feature is a
    list), a scalar and a list of it -> the list.
    """
    if a == b:
        return a
    if pa.types.is_null(a) or pa.types.is_null(b):
        return b if pa.types.is_null(a) else a
    numbers = (pa.types.is_integer, pa.types.is_floating)
    if all(pa.types.is_integer(t) for t in (a, b)):
        return pa.int64()
    if all(any(is_kind(t) for is_kind in numbers) for t in (a, b)):
        return pa.float64()
    for is_kind in ((lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
                    (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t))):
        if is_kind(a) and is_kind(b):
            return pa.large_string() if pa.types.is_string(a) or pa.types.is_large_string(a) \
                else pa.large_binary()
    if _is_list(a) and _is_list(b):
        inner = unify_types(a.value_type, b.value_type, lists_take_scalars)
        if inner is None:
            return None
        return pa.large_list(inner) if pa.types.is_large_list(a) or pa.types.is_large_list(b) \
            else pa.list_(inner)
    if lists_take_scalars and (_is_list(a) or _is_list(b)):
        items, scalar = (a, b) if _is_list(a) else (b, a)
        inner = unify_types(items.value_type, scalar)
        return None if inner is None else pa.large_list(inner)
    return None


_CONFLICT = b"shardmeans.conflict"


def _column_type(name: str, seen: List[Tuple[FileColumns, pa.DataType]], fmt: str
                 ) -> Tuple[pa.DataType, Optional[str]]:
    """(the column's type over the files that have it, a one-line conflict or None).

    Files without rows decide nothing where a file with rows has the column.
    For TFRecord, a feature that is bytes in some files and numbers in others
    takes the kind more of the sampled rows hold (rows of the other kind are
    rejected when the column is used).
    """
    with_rows = [(f, t) for f, t in seen if f.rows != 0]
    seen = with_rows or seen
    if fmt == "tfrecord":
        seen = _majority(seen, lambda item: item[1], lambda item: item[0].values.get(name, 0))
    kind, origin = seen[0][1], seen[0][0].path
    for f, t in seen[1:]:
        unified = unify_types(kind, t, lists_take_scalars=fmt == "tfrecord")
        if unified is None:
            return kind, (f"column {name!r} is {kind} in {origin} but {t} in {f.path}: the types "
                          f"cannot be combined")
        kind = unified
    return kind, None


def union_schema(files: List[FileColumns], fmt: str) -> pa.Schema:
    """The columns of all `files`, in order of first appearance (files in the given order),
    each with its unified type; a column whose types conflict keeps its first file's type
    and the conflict's one-line message in its field metadata (`column_conflict`)."""
    seen: Dict[str, List[Tuple[FileColumns, pa.DataType]]] = {}
    for f in files:
        for name, kind in f.types.items():
            seen.setdefault(name, []).append((f, kind))
    fields = []
    for name, observed in seen.items():
        kind, conflict = _column_type(name, observed, fmt)
        fields.append(pa.field(name, kind, metadata={_CONFLICT: conflict} if conflict else None))
    return pa.schema(fields)


def column_conflict(field: pa.Field) -> Optional[str]:
    """The one-line conflict of a union_schema field whose types cannot be combined, else None."""
    value = (field.metadata or {}).get(_CONFLICT)
    return value.decode("utf-8") if value else None


def _csv_numeric(files: List[FileColumns], schema: pa.Schema) -> List[str]:
    """The CSV columns most of whose sampled non-empty values are numbers.

    Each column is sampled from the first _PROBE_ROWS rows of the files that
    have it, in order, until it has _PROBE_ROWS non-empty values or
    _PROBE_MAX_FILES files were read for it: files are read in rounds of 1, 2,
    4, ... at once, so a first file with enough rows is the only one read.
    """
    sampled = {name: [] for name in schema.names}
    counts = {name: 0 for name in schema.names}
    files_read = {name: 0 for name in schema.names}
    candidates = [f for f in files if f.unreadable is None and f.types]
    next_file, wave = 0, 1
    with ThreadPoolExecutor(_PROBE_THREADS) as pool:
        while next_file < len(candidates):
            needed = {n for n in schema.names
                      if counts[n] < _PROBE_ROWS and files_read[n] < _PROBE_MAX_FILES}
            if not needed:
                break
            batch = []
            while next_file < len(candidates) and len(batch) < wave:
                if needed & candidates[next_file].types.keys():
                    batch.append(candidates[next_file])
                next_file += 1
            for f, sample in zip(batch, pool.map(_csv_sample, [f.path for f in batch])):
                for name in needed & f.types.keys():
                    files_read[name] += 1
                    if sample is not None and name in sample.schema.names:
                        text = _non_empty(sample.column(name).combine_chunks())
                        sampled[name].append(text)
                        counts[name] += len(text)
            wave = min(wave * 2, _PROBE_THREADS)
    return [name for name in schema.names
            if sampled[name] and _mostly_numbers(pa.concat_arrays(sampled[name]))]


def _csv_sample(path: str) -> Optional[pa.Table]:
    """The first _PROBE_ROWS rows of a CSV file (all string), or None if it cannot be read now."""
    batches, n = [], 0
    try:
        for chunk in read_chunks(path, "csv", _PROBE_ROWS):
            batches.append(chunk.batch)
            n += chunk.batch.num_rows
            if n >= _PROBE_ROWS:
                break
    except FileUnreadable:
        return None
    batches = [b for b in batches if b.num_rows]
    return pa.Table.from_batches(batches) if batches else None


def _is_number_type(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


class InputLayout(NamedTuple):
    """What the input files say together.

    path: the input for messages: its one file, or "the N files matching 'PATTERN'".
    format: csv, parquet or tfrecord.
    schema: every column of any file (order of first appearance in sorted file
            order), its type unified over the files (`column_conflict` tells
            the columns whose types cannot be).
    numeric: the default features' candidates: numeric scalar columns (CSV:
             mostly numbers in the rows sampled).
    passthrough: the columns the assignments carry (the id column, or all of them).
    """

    path: str
    format: str
    schema: pa.Schema
    numeric: List[str]
    passthrough: pa.Schema


def input_layout(pattern: str, fmt: Optional[str] = None, id_column: Optional[str] = None,
                 on_invalid: str = "reject") -> InputLayout:
    """Match `pattern` and read the columns of every file (footers, headers, first records,
    in threads); check `id_column`. UserInputError naming what is wrong.

    A file that cannot be opened stops here with --on_invalid fail; with reject
    it is left out of the layout (the job reports it as a rejected file).
    Passthrough columns whose types conflict between files are an error.
    """
    paths = match_input(pattern)
    fmt = fmt or format_from_path(paths[0])
    with ThreadPoolExecutor(min(_PROBE_THREADS, len(paths))) as pool:
        files = list(pool.map(lambda p: file_columns(p, fmt), paths))
    for f in files:
        if f.unreadable is not None:
            if on_invalid == "fail":
                raise UserInputError(f"cannot read file {f.path}: {f.unreadable} "
                                     f"(--on_invalid=fail)")
            logging.warning("cannot read %s (%s): it is reported as a rejected file", f.path,
                            f.unreadable)
    where = paths[0] if len(paths) == 1 else f"the {len(paths)} files matching {pattern!r}"
    schema = union_schema(files, fmt)
    if not schema.names:
        raise UserInputError(f"no column to read: {where} "
                             f"{'is' if len(paths) == 1 else 'are all'} empty or unreadable")
    if id_column is not None and id_column not in schema.names:
        raise UserInputError(f"--id_column {id_column!r} is not a column of {where} "
                             f"(columns: {', '.join(schema.names)})")
    passthrough = pa.schema([schema.field(id_column)]) if id_column else schema
    for field in schema:
        conflict = column_conflict(field)
        if conflict and field.name in passthrough.names:
            hint = "" if id_column else "; --id_column copies only that column"
            raise UserInputError(f"{conflict} (it is copied to the assignments{hint})")
        if conflict:
            logging.warning("%s; it is no default feature", conflict)
    passthrough = pa.schema([pa.field(f.name, f.type) for f in passthrough])
    if fmt == "csv":
        numeric = _csv_numeric(files, schema)
    else:
        numeric = [f.name for f in schema if _is_number_type(f.type) and not column_conflict(f)]
    return InputLayout(where, fmt, schema, numeric, passthrough)
