"""Reading CSV, Parquet and TFRecord (tf.Example) files as Arrow record batches.

Every reader yields `Chunk`s: a record batch of the columns as read, with the
1-based row number of each row in its file, plus the rows the format itself
could not parse (a CSV row with the wrong number of fields, a TFRecord record
that is not a tf.Example). Files are opened through pipeline.io.files (CSV,
Parquet: Beam's FileSystems, compressed CSV too) or TensorFlow (TFRecord).

A file that cannot be opened raises files.FileUnreadable before its first
chunk; a file that opens but is not in its format raises a plain
UserInputError.
"""

import csv
import io
import logging
from typing import Dict, Iterator, List, NamedTuple, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io.files import FileUnreadable, open_raw, open_stream
from transforms.core.errors import UserInputError

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
        raise UserInputError(
            f"cannot read {fmt} file {path}: {type(e).__name__}: {' '.join(str(e).split())}"
        ) from None


def csv_header(path: str) -> List[str]:
    """The column names of a CSV file: its first record, without a UTF-8 byte order mark;
    [] for an empty file. UserInputError when a name appears twice."""
    with open_stream(path) as stream:
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
                    yield Chunk(
                        path,
                        batch.slice(start, batch_rows),
                        rows[start : start + batch_rows],
                        unparsed if start == 0 else [],
                    )
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
                    f"{_CSV_MAX_BLOCK_BYTES >> 20} MB (an unclosed quote?)"
                ) from None
            block_bytes *= 4


def _csv_blocks(
    path: str, header: List[str], block_bytes: int
) -> Iterator[Tuple[pa.RecordBatch, np.ndarray, list]]:
    """Each block of a CSV file: (its rows, all columns string; their row numbers int64 [n];
    the rows of the block with the wrong number of fields, as Chunk.unparsed)."""
    import pyarrow.csv as pacsv

    unparsed = []

    def on_bad_row(row):
        # row.number counts the file's records from 1, the header included.
        unparsed.append(
            (
                row.number - 1,
                row.text,
                f"expected {row.expected_columns} fields, found {row.actual_columns}",
            )
        )
        return "skip"

    with open_stream(path) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                use_threads=False, column_names=header, skip_rows=1, block_size=block_bytes
            ),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_bad_row),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header}),
        )
        next_row = 1
        for batch in reader:
            bad = [u[0] for u in unparsed]
            numbers = np.arange(next_row, next_row + batch.num_rows + len(bad))
            next_row += len(numbers)
            yield batch, numbers[~np.isin(numbers, bad)], unparsed
            unparsed = []
        if unparsed:  # bad rows after the last block
            yield (
                pa.RecordBatch.from_pylist([], schema=reader.schema),
                np.zeros(0, np.int64),
                unparsed,
            )


def _parquet_batches(parquet, batch_size: int, columns=None) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `batch_size` rows of a pyarrow.parquet.ParquetFile, one row
    group at a time.

    Not one `iter_batches` over the whole file: with pyarrow 25 that holds on
    to memory (outside Arrow's pool) in proportion to the rows read until it
    ends, about the file's decoded size; one row group at a time holds one.
    """
    for group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns)


def is_empty(f) -> bool:
    """Whether a seekable file at its start holds no byte (a 0-byte shard: no rows, not
    a malformed Parquet file)."""
    empty = not f.read(1)
    f.seek(0)
    return empty


def _read_parquet(path: str, batch_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    with open_raw(path) as f:
        if is_empty(f):
            logging.warning("%s is empty: no rows", path)
            return
        next_row = 1
        for batch in _parquet_batches(pq.ParquetFile(f), batch_rows):
            yield Chunk(
                path, decode_dictionaries(batch), np.arange(next_row, next_row + batch.num_rows), []
            )
            next_row += batch.num_rows


def decode_dictionaries(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Dictionary-encoded columns (pandas `category`) as plain arrays of their values."""
    if not any(pa.types.is_dictionary(t) for t in batch.schema.types):
        return batch
    columns = [
        c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _unwrap_lists(batch: pa.RecordBatch) -> pa.RecordBatch:
    """tf.Example features are lists: a column with at most one value a row becomes scalar.

    A column with longer lists stays a list; validation rejects a row whose
    selected feature is not exactly one value. (A column of only empty
    features decodes as type null: it stays so.)
    """
    columns = []
    for col in batch.columns:
        if not is_list(col.type):
            columns.append(col)
            continue
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
        if lengths.size and lengths.max() > 1:
            columns.append(col)
            continue
        starts = col.offsets.to_numpy()[:-1]
        columns.append(pc.take(col.values, pa.array(starts, mask=lengths != 1)))
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def tfrecord_batches(path: str, batch_rows: int) -> Iterator[List[bytes]]:
    """The records of a TFRecord file, `batch_rows` at a time; FileUnreadable if the file
    cannot be opened (TensorFlow opens it at the first read)."""
    import tensorflow as tf

    compression = "GZIP" if path.endswith(".gz") else ""
    records = iter(
        tf.data.TFRecordDataset(path, compression_type=compression)
        .batch(batch_rows)
        .as_numpy_iterator()
    )
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
    for records in tfrecord_batches(path, batch_rows):
        for index, batch, unparsed in decode_examples(records):
            rows = next_row + index
            yield Chunk(
                path, _unwrap_lists(batch), rows, [(next_row + i, None, why) for i, why in unparsed]
            )
        next_row += len(records)


def decode_examples(
    records: List[bytes],
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
    mixed = {
        name: max(set(k.values()), key=list(k.values()).count)
        for name, k in kinds.items()
        if len(set(k.values())) > 1
    }
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


# Numbers in text


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
