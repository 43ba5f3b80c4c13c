"""The input's layout: the columns of all its files, their types, the numeric ones.

Read at graph construction from every file (Parquet footers, CSV headers, a
TFRecord file's first records), in threads: the union decides which columns
exist, a column missing from a file is null there, types are unified across
files, and conflicts are named with both files.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, NamedTuple, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io.files import FileUnreadable, format_from_path, match_input, open_raw
from pipeline.io.readers import (
    csv_header,
    decode_examples,
    is_empty,
    is_list,
    parse_numbers,
    read_chunks,
    tfrecord_batches,
)
from transforms.core.errors import UserInputError

# Threads reading Parquet footers, CSV headers and TFRecord samples at graph
# construction: each is a small read, mostly waiting on storage (gs://).
_PROBE_THREADS = 32
# Rows of each file sampled: a TFRecord file's features, a CSV column's values.
_PROBE_ROWS = 1000
# A CSV column is sampled from at most this many files for its numeric kind.
_PROBE_MAX_FILES = 64


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
        raise UserInputError(
            f"cannot read {fmt} file {path}: {type(e).__name__}: {' '.join(str(e).split())}"
        ) from None


def _parquet_columns(path: str) -> FileColumns:
    import pyarrow.parquet as pq

    with open_raw(path) as f:
        if is_empty(f):
            return FileColumns(path, {}, 0, {}, None)
        parquet = pq.ParquetFile(f)
        schema, rows = parquet.schema_arrow, parquet.metadata.num_rows
    types = {
        field.name: (field.type.value_type if pa.types.is_dictionary(field.type) else field.type)
        for field in schema
    }
    return FileColumns(path, types, rows, {}, None)


def _tfrecord_columns(path: str) -> FileColumns:
    """Each feature's value type in the first _PROBE_ROWS records, a list type when a record
    holds several values. Ints and floats together are float64; bytes and numbers
    together, the kind more records hold."""
    records = next(tfrecord_batches(path, _PROBE_ROWS), [])
    # column -> [(value type, rows holding values, most values in a row)], one per group
    parts: Dict[str, List[Tuple[pa.DataType, int, int]]] = {}
    for _, batch, _ in decode_examples(records):
        for name, col in zip(batch.schema.names, batch.columns):
            if not is_list(col.type):  # type null: only empty features
                parts.setdefault(name, []).append((pa.null(), 0, 0))
                continue
            lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
            parts.setdefault(name, []).append(
                (col.type.value_type, int((lengths > 0).sum()), int(lengths.max(initial=0)))
            )
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
        kind = kind.value_type if is_list(kind) else kind
        return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)

    numbers = [item for item in items if is_number(kind_of(item))]
    others = [item for item in items if not is_number(kind_of(item))]
    if not numbers or not others:
        return items
    weight = lambda group: sum(weight_of(item) for item in group)
    return numbers if weight(numbers) >= weight(others) else others


def unify_types(
    a: pa.DataType, b: pa.DataType, lists_take_scalars: bool = False
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
    for is_kind in (
        (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)),
    ):
        if is_kind(a) and is_kind(b):
            return (
                pa.large_string()
                if pa.types.is_string(a) or pa.types.is_large_string(a)
                else pa.large_binary()
            )
    if is_list(a) and is_list(b):
        inner = unify_types(a.value_type, b.value_type, lists_take_scalars)
        if inner is None:
            return None
        return (
            pa.large_list(inner)
            if pa.types.is_large_list(a) or pa.types.is_large_list(b)
            else pa.list_(inner)
        )
    if lists_take_scalars and (is_list(a) or is_list(b)):
        items, scalar = (a, b) if is_list(a) else (b, a)
        inner = unify_types(items.value_type, scalar)
        return None if inner is None else pa.large_list(inner)
    return None


_CONFLICT = b"shardmeans.conflict"


def _column_type(
    name: str, seen: List[Tuple[FileColumns, pa.DataType]], fmt: str
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
            return kind, (
                f"column {name!r} is {kind} in {origin} but {t} in {f.path}: the types "
                f"cannot be combined"
            )
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
    counts = dict.fromkeys(schema.names, 0)
    files_read = dict.fromkeys(schema.names, 0)
    candidates = [f for f in files if f.unreadable is None and f.types]
    next_file, wave = 0, 1
    with ThreadPoolExecutor(_PROBE_THREADS) as pool:
        while next_file < len(candidates):
            needed = {
                n
                for n in schema.names
                if counts[n] < _PROBE_ROWS and files_read[n] < _PROBE_MAX_FILES
            }
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
    return [
        name
        for name in schema.names
        if sampled[name] and _mostly_numbers(pa.concat_arrays(sampled[name]))
    ]


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
    files: every file the pattern matched, sorted.
    """

    path: str
    format: str
    schema: pa.Schema
    numeric: List[str]
    passthrough: pa.Schema
    files: List[str]


def input_layout(
    pattern: str,
    fmt: Optional[str] = None,
    id_column: Optional[str] = None,
    on_invalid: str = "reject",
) -> InputLayout:
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
                raise UserInputError(
                    f"cannot read file {f.path}: {f.unreadable} (--on_invalid=fail)"
                )
            logging.warning(
                "cannot read %s (%s): it is reported as a rejected file", f.path, f.unreadable
            )
    where = paths[0] if len(paths) == 1 else f"the {len(paths)} files matching {pattern!r}"
    schema = union_schema(files, fmt)
    if not schema.names:
        raise UserInputError(
            f"no column to read: {where} "
            f"{'is' if len(paths) == 1 else 'are all'} empty or unreadable"
        )
    if id_column is not None and id_column not in schema.names:
        raise UserInputError(
            f"--id_column {id_column!r} is not a column of {where} "
            f"(columns: {', '.join(schema.names)})"
        )
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
    return InputLayout(where, fmt, schema, numeric, passthrough, paths)
