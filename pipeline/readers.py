"""Reading CSV, Parquet and TFRecord (tf.Example) files as Arrow record batches.

Every reader yields `Chunk`s: a record batch of the columns as read, with the
1-based row number of each row in its file, plus the rows the format itself
could not parse (a CSV row with the wrong number of fields). Files are opened
through Beam's FileSystems (CSV, Parquet) or TensorFlow's (TFRecord), so
gs:// and the other supported schemes work as local paths do.
"""
import csv
import io
import logging
from typing import Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from transforms.errors import UserInputError

FORMATS = ("csv", "parquet", "tfrecord")
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
             ".tfrecord": "tfrecord", ".tfrecords": "tfrecord", ".tfr": "tfrecord"}


class Chunk(NamedTuple):
    """Rows of one file: `batch` (columns as read), `rows` int64 [n] (1-based row numbers),
    `unparsed` [(row number, raw text, reason)] for rows the format could not split."""

    path: str
    batch: pa.RecordBatch
    rows: np.ndarray
    unparsed: list


def format_from_path(path: str) -> str:
    """The format a file's suffix implies (compression suffixes ignored)."""
    name = path.lower()
    for comp in (".gz", ".bz2", ".zst", ".deflate"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise UserInputError(
        f"cannot tell the format of {path!r} from its suffix; pass --format {{{','.join(FORMATS)}}}")


def match_input(pattern: str) -> List[str]:
    """The files matching `pattern`, sorted; an error naming the pattern if none."""
    try:
        result = FileSystems.match([pattern])[0]
    except Exception as e:  # Beam raises BeamIOError for a bad path or an unreachable bucket
        raise UserInputError(f"cannot list input {pattern!r}: {e}") from None
    paths = sorted(m.path for m in result.metadata_list if m.size_in_bytes >= 0)
    if not paths:
        raise UserInputError(f"no file matches --input {pattern!r}")
    return paths


def read_chunks(path: str, fmt: str, batch_rows: int) -> Iterator[Chunk]:
    """Chunks of at most `batch_rows` rows of one file; UserInputError if it cannot be read."""
    reader = {"csv": _read_csv, "parquet": _read_parquet, "tfrecord": _read_tfrecord}[fmt]
    try:
        yield from reader(path, batch_rows)
    except UserInputError:
        raise
    except Exception as e:
        raise UserInputError(f"cannot read {fmt} file {path}: {type(e).__name__}: {e}") from None


def _csv_header(path: str) -> List[str]:
    with FileSystems.open(path) as f:
        line = io.TextIOWrapper(f, encoding="utf-8", newline="").readline()
    return next(csv.reader([line]), [])


def _read_csv(path: str, batch_rows: int) -> Iterator[Chunk]:
    import pyarrow.csv as pacsv

    header = _csv_header(path)
    if not header:
        logging.warning("%s is empty: no header, no rows", path)
        return
    unparsed = []

    def on_bad_row(row):
        # row.number is the physical line (the header is line 1).
        unparsed.append((row.number - 1, row.text,
                         f"expected {row.expected_columns} fields, found {row.actual_columns}"))
        return "skip"

    with FileSystems.open(path) as f:
        # Every column as a string: a bad value rejects its row, not the whole file.
        reader = pacsv.open_csv(
            f,
            read_options=pacsv.ReadOptions(use_threads=False, column_names=header, skip_rows=1,
                                           block_size=1 << 22),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_bad_row),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header}))
        next_row = 1
        for batch in reader:
            bad = [u[0] for u in unparsed]
            numbers = np.arange(next_row, next_row + batch.num_rows + len(bad))
            rows = numbers[~np.isin(numbers, bad)]
            next_row += len(numbers)
            for start in range(0, batch.num_rows, batch_rows):
                yield Chunk(path, batch.slice(start, batch_rows), rows[start:start + batch_rows],
                            unparsed if start == 0 else [])
            if batch.num_rows == 0 and unparsed:
                yield Chunk(path, batch, rows, unparsed)
            unparsed = []
        if unparsed:  # bad rows after the last block
            yield Chunk(path, pa.RecordBatch.from_pylist([], schema=reader.schema),
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


def _read_parquet(path: str, batch_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    with FileSystems.open(path) as f:
        next_row = 1
        for batch in _parquet_batches(pq.ParquetFile(f), batch_rows):
            yield Chunk(path, batch, np.arange(next_row, next_row + batch.num_rows), [])
            next_row += batch.num_rows


def _unwrap_lists(batch: pa.RecordBatch) -> pa.RecordBatch:
    """tf.Example features are lists: a column with at most one value a row becomes scalar.

    A column with longer lists stays a list; validation rejects a row whose
    selected feature is not exactly one value.
    """
    columns = []
    for col in batch.columns:
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
        if lengths.size and lengths.max() > 1:
            columns.append(col)
            continue
        starts = col.offsets.to_numpy()[:-1]
        columns.append(pc.take(col.values, pa.array(starts, mask=lengths != 1)))
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _read_tfrecord(path: str, batch_rows: int) -> Iterator[Chunk]:
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    compression = "GZIP" if path.endswith(".gz") else ""
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    dataset = tf.data.TFRecordDataset(path, compression_type=compression).batch(batch_rows)
    next_row = 1
    for records in dataset.as_numpy_iterator():
        batch = _unwrap_lists(decoder.DecodeBatch(list(records)))
        yield Chunk(path, batch, np.arange(next_row, next_row + batch.num_rows), [])
        next_row += batch.num_rows


def probe_columns(path: str, fmt: str, max_rows: int = 1000) -> Tuple[pa.Schema, List[str]]:
    """(the columns as read, the names of the numeric ones) from the first rows of `path`.

    For CSV every column reads as a string, and a column is numeric when most of
    its non-empty values in those rows parse as numbers: a stray bad value
    rejects its row, it does not change the column's kind. Used at graph
    construction to choose the default features and check the ones asked for.
    """
    chunk = next(iter(read_chunks(path, fmt, max_rows)), None)
    if chunk is None:
        raise UserInputError(f"{path} has no rows to tell its columns from")
    numeric = []
    for name, col in zip(chunk.batch.schema.names, chunk.batch.columns):
        if fmt == "csv":
            values = [v for v in col.to_pylist() if v not in (None, "")]
            is_numeric = bool(values) and sum(map(_parses, values)) * 2 > len(values)
        else:
            kind = col.type
            if pa.types.is_list(kind) or pa.types.is_large_list(kind):
                kind = kind.value_type
            is_numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if is_numeric:
            numeric.append(name)
    return chunk.batch.schema, numeric


def _parses(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


class InputLayout(NamedTuple):
    """What the first input file says: its format, columns, numeric columns, and the
    columns the assignments carry (the id column, or all of them)."""

    path: str
    format: str
    schema: pa.Schema
    numeric: List[str]
    passthrough: pa.Schema


def input_layout(pattern: str, fmt: Optional[str] = None,
                 id_column: Optional[str] = None) -> InputLayout:
    """Match `pattern`, probe its first file, check `id_column`; UserInputError naming what is wrong."""
    first = match_input(pattern)[0]
    fmt = fmt or format_from_path(first)
    schema, numeric = probe_columns(first, fmt)
    if id_column is not None and id_column not in schema.names:
        raise UserInputError(f"--id_column {id_column!r} is not a column of {first} "
                             f"(columns: {', '.join(schema.names)})")
    passthrough = pa.schema([schema.field(id_column)]) if id_column else schema
    return InputLayout(first, fmt, schema, numeric, passthrough)
