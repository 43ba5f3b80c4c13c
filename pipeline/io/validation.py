"""Row validation: which rows of a chunk are clustered, and why the others are not.

A row is valid when every selected feature holds exactly one finite number (a
vector column, `transforms.core.vectors`: a list of its width of them) and
every passthrough column's value has (or casts to) the column's type; a
passthrough column the file lacks is null. Everything else is a rejection with
a reason that names the column; nothing is dropped silently: read == valid +
rejected for every chunk.
"""

import json
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io.readers import Chunk, is_list, parse_numbers
from transforms.beam.shards import (
    CATEGORIES_COLUMN,
    WEIGHT_COLUMN,
    matrix_to_categories,
    matrix_to_features,
)
from transforms.core import vectors
from transforms.core.categorical import MISSING_VALUE


class Checked(NamedTuple):
    """A validated chunk.

    valid: record batch of the valid rows: `features_column` (list<float64>, D
           values) then the passthrough columns; None when no row is valid.
    rejected: one JSON line per rejected row (file, row, column, reason, values).
    n_read: rows read, rejected ones included.
    first_error: "FILE, row R, column C: reason" of the first rejected row, or None.
    imputed: with `impute`, per feature the valid rows whose value is missing (NaN in
           `valid`, for the transform to impute); else None.
    """

    valid: Optional[pa.RecordBatch]
    rejected: List[str]
    n_read: int
    first_error: Optional[str]
    # int64 [D + C]: values imputed per feature, the numeric then the categorical ones
    imputed: Optional[np.ndarray] = None


def _as_float(col: pa.Array) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One column of any Arrow type as numbers, and the rows that are not one finite number.

    Returns (values float64 [n], bad int64 [k]: the rows with a problem, ascending,
    reasons object [k]: a str for each). Every problem leaves its value non-finite
    or null, so `bad` comes from one vectorized test and the reasons are worked out
    for those rows only: per-row object arrays for all n rows would be nearly
    all of validation's time, spent when (usually) no row is bad
    (bench/RESULTS.md, 'Fixed costs').
    """
    n = len(col)
    lengths = None  # int32 [n] values per row, for a list column (tf.Example)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
        starts = col.offsets.to_numpy()[:-1]
        col = pc.take(col.values, pa.array(starts, mask=lengths != 1))
    empty = None  # bool [n] empty text, for a string column
    non_numeric = None  # object [n] the (trimmed) text that is not a number, else None
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        text = pc.utf8_trim_whitespace(col)
        empty = pc.fill_null(pc.equal(text, ""), False).to_numpy(zero_copy_only=False)
        if empty.any():  # (else a copy of the column that changes nothing)
            text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
        values, not_a_number = parse_numbers(text)
        if not_a_number.any():
            non_numeric = np.full(n, None, dtype=object)
            rows = np.flatnonzero(not_a_number)
            non_numeric[rows] = text.take(pa.array(rows)).to_pylist()
    elif (
        pa.types.is_integer(col.type)
        or pa.types.is_floating(col.type)
        or pa.types.is_null(col.type)
    ):
        values = pc.cast(col, pa.float64())
    else:
        return (
            np.full(n, np.nan),
            np.arange(n),
            np.full(n, f"value of type {col.type}, not a number", dtype=object),
        )
    x = values.to_numpy(zero_copy_only=False)
    missing = values.is_null().to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isfinite(x) | missing)
    return (
        x,
        bad,
        _reasons(
            x[bad],
            missing[bad],
            None if lengths is None else lengths[bad],
            None if empty is None else empty[bad],
            None if non_numeric is None else non_numeric[bad],
        ),
    )


def _as_vectors(col: pa.Array, width: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A vector column (lists of `width` numbers) as numbers, and the rows that are not
    `width` finite numbers: (values float64 [n, width], bad int64 [k] ascending, reasons
    object [k]), as `_as_float`. A null list is a missing value (NaN in every element);
    a list of another length, a null element, NaN or infinity is a problem of its own."""
    n = len(col)
    x = np.full((n, width), np.nan)
    kind = col.type
    if not (is_list(kind) or pa.types.is_fixed_size_list(kind)) or not (
        pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)
    ):
        why = f"value of type {kind}, not a list of {width} numbers"
        return x, np.arange(n), np.full(n, why, dtype=object)
    missing = col.is_null().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    fits = ~missing & (lengths == width)
    why = np.full(n, None, dtype=object)
    why[missing] = "missing value"
    for i in np.flatnonzero(~missing & ~fits):
        why[i] = f"{lengths[i]} values where {width} are expected"
    if fits.any():
        flat = col.filter(pa.array(fits)).flatten()
        values = pc.cast(flat, pa.float64()).to_numpy(zero_copy_only=False).reshape(-1, width)
        nulls = flat.is_null().to_numpy(zero_copy_only=False).reshape(-1, width)
        rows = np.flatnonzero(fits)
        x[rows] = values
        # The first problem of a row names it: a null element, then NaN, then infinity.
        for flag, reason in (
            (np.isinf(values).any(axis=1), "infinite value"),
            (np.isnan(values).any(axis=1) & ~nulls.any(axis=1), "NaN"),
            (nulls.any(axis=1), "null element"),
        ):
            why[rows[flag]] = reason
    bad = np.flatnonzero(why != None)  # noqa: E711 (elementwise on object arrays)
    return x, bad, why[bad]


def _as_categories(col: pa.Array) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A categorical column as text, and the rows that hold no one value: (values object [n]
    of str, bad int64 [k] ascending, reasons object [k]). Text is trimmed; bytes are
    decoded as UTF-8; booleans are "true"/"false", numbers their decimal text (a code
    column named by --categorical); a list (tf.Example) must hold one value. A null,
    empty or absent value has the reason "missing value" or "empty value"
    (MISSING_REASONS: with --missing impute it is the category __missing__)."""
    n = len(col)
    why = np.full(n, None, dtype=object)
    if is_list(col.type):
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(lengths > 1):
            why[i] = f"{lengths[i]} values where one is expected"
        starts = col.offsets.to_numpy()[:-1]
        col = pc.take(col.values, pa.array(starts, mask=lengths != 1))
    kind = col.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        col = pa.array(
            [None if v is None else v.decode("utf-8", errors="replace") for v in col.to_pylist()],
            pa.string(),
        )
    elif pa.types.is_boolean(kind):
        col = pc.if_else(col, "true", "false")
    elif _is_number(kind) or pa.types.is_null(kind):
        col = pc.cast(col, pa.string())
    elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return (
            np.full(n, "", dtype=object),
            np.arange(n),
            np.full(n, f"value of type {kind}, not a category", dtype=object),
        )
    text = pc.utf8_trim_whitespace(col)
    values = text.to_numpy(zero_copy_only=False).astype(object)
    missing = text.is_null().to_numpy(zero_copy_only=False)
    empty = pc.fill_null(pc.equal(text, ""), False).to_numpy(zero_copy_only=False)
    unset = why == None  # noqa: E711 (elementwise on object arrays)
    why[unset & empty] = "empty value"
    why[unset & missing] = "missing value"
    values[missing | empty] = ""
    bad = np.flatnonzero(why != None)  # noqa: E711
    return values, bad, why[bad]


def _is_text(kind: pa.DataType) -> bool:
    return any(
        is_kind(kind)
        for is_kind in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
        )
    )


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


_NONE = (np.zeros(0, np.int64), np.zeros(0, dtype=object))


def conform(col: pa.Array, target: pa.DataType) -> Tuple[pa.Array, np.ndarray, np.ndarray]:
    """A passthrough column as the input layout's type.

    Returns (values [n] of type `target`, null in the rows that do not fit;
    bad int64 [k] those rows, ascending; reasons object [k]: a str for each).

    The files of one input differ: int32 here where the layout says int64
    (widened), ints where it says float64 (converted, precision loss accepted),
    a tf.Example feature with several values in some rows of a column the
    layout says is scalar (such a row is rejected, a row without a value is
    null), bytes where the layout expects numbers or the other way round
    (rejected: a value's kind is not converted).
    """
    if col.type == target:
        return (col, *_NONE)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    many = _NONE
    if is_list(col.type) and not is_list(target):
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(lengths > 1)
        many = (
            rows,
            np.array([f"{lengths[i]} values where one is expected" for i in rows], dtype=object),
        )
        starts = col.offsets.to_numpy()[:-1]
        col = pc.take(col.values, pa.array(starts, mask=lengths != 1))
    elif is_list(target) and not is_list(col.type) and not pa.types.is_null(col.type):
        # A tf.Example feature read as scalars (no row of this chunk has several values).
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(valid)]).astype(np.int64)
        col = pa.LargeListArray.from_arrays(
            pa.array(offsets), col.filter(pa.array(valid)), mask=pa.array(~valid)
        )
    values, bad, why = _cast(col, target)
    if many[0].size:
        order = np.argsort(np.concatenate([many[0], bad]), kind="stable")
        bad, why = np.concatenate([many[0], bad])[order], np.concatenate([many[1], why])[order]
    return values, bad, why


def _cast(col: pa.Array, target: pa.DataType) -> Tuple[pa.Array, np.ndarray, np.ndarray]:
    """`col` cast to `target`: (values, rows that do not fit, their reasons), as conform."""
    if col.type == target:
        return (col, *_NONE)
    source_item = col.type.value_type if is_list(col.type) else col.type
    target_item = target.value_type if is_list(target) else target
    mismatch = (_is_text(source_item) and _is_number(target_item)) or (
        _is_number(source_item) and _is_text(target_item)
    )
    if mismatch:  # (Arrow would parse text as numbers, or print numbers as text)
        return _none_fit(col, target)
    # Numbers into floats may round (int64 -> float64, float64 -> float32): accepted, as
    # the layout made the column float because its files hold both.
    safe = not (_is_number(source_item) and pa.types.is_floating(target_item))
    try:
        return (pc.cast(col, target, safe=safe), *_NONE)
    except pa.ArrowNotImplementedError:
        return _none_fit(col, target)
    except pa.ArrowInvalid:
        pass
    parts, bad, why = [], [], []  # some values do not fit: which, one at a time
    for i in range(len(col)):
        try:
            parts.append(pc.cast(col.slice(i, 1), target, safe=safe))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            parts.append(pa.nulls(1, target))
            bad.append(i)
            why.append(f"value does not fit type {target}: {str(e).strip().splitlines()[0]}")
    return pa.concat_arrays(parts), np.array(bad, np.int64), np.array(why, dtype=object)


def _none_fit(col: pa.Array, target: pa.DataType) -> Tuple[pa.Array, np.ndarray, np.ndarray]:
    """No value of `col` can be a `target`: every row holding one is rejected."""
    bad = np.flatnonzero(col.is_valid().to_numpy(zero_copy_only=False))
    return (
        pa.nulls(len(col), target),
        bad,
        np.full(bad.size, f"a value of type {col.type} where {target} is expected", dtype=object),
    )


def file_rejection(path: str, reason: str) -> str:
    """The rejected output's record of a whole file that cannot be read (a JSON line)."""
    return json.dumps(
        {"file": path, "row": None, "column": None, "reason": f"cannot read file: {reason}"}
    )


def _reasons(x, missing, lengths, empty, non_numeric) -> np.ndarray:
    """object [k]: why each of k bad rows is rejected, from [k] slices for those rows of the
    values (float64), nulls (bool), list lengths (int32), empty text (bool) and
    non-numeric text (object, else None); the last three are None when they do not apply.

    The first of these that holds names the problem: more than one value, text
    that is not a number, empty text, no value, NaN, an infinite value. (A row
    with more than one value, non-numeric or empty text has a null value, so
    it is never NaN or infinite as well.)
    """
    # Assigned last to first, so that the first that holds is the one left.
    why = np.full(len(x), "infinite value", dtype=object)
    why[~missing & np.isnan(x)] = "NaN"
    why[missing] = "missing value"
    if empty is not None:
        why[empty] = "empty value"
    if non_numeric is not None:
        for i in np.flatnonzero(non_numeric != None):  # noqa: E711 (elementwise on object arrays)
            why[i] = f"non-numeric value {non_numeric[i]!r}"
    if lengths is not None:
        for i in np.flatnonzero(lengths > 1):
            why[i] = f"{lengths[i]} values where one is expected"
    return why


def _json_safe(value):
    """A rejected row's value as JSON can hold it: bytes as text, NaN/inf as strings,
    lists (a tf.Example feature with several values) element by element."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return str(value)


def check_weights(batch: pa.RecordBatch, name: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weight column `name` of a chunk: (weights float64 [n], bad int64 [k] the rows
    whose weight is not a finite number >= 0, ascending, reasons object [k]).

    A weight is read as a feature is (`_as_float`: text, lists of one value), and a
    negative one is rejected too; 0 is a valid weight.
    """
    if name not in batch.schema.names:
        n = batch.num_rows
        return np.zeros(n), np.arange(n), np.full(n, "the file has no such column", dtype=object)
    w, bad, why = _as_float(batch.column(name))
    negative = np.flatnonzero(w < 0)  # (NaN compares False: it is in `bad` already)
    if negative.size:
        order = np.argsort(np.concatenate([bad, negative]), kind="stable")
        reasons = np.array([f"negative weight {float(w[i])!r}" for i in negative], dtype=object)
        bad, why = np.concatenate([bad, negative])[order], np.concatenate([why, reasons])[order]
    return np.where(np.isfinite(w) & (w >= 0), w, 0.0), bad, why


# The reasons of a feature value that is missing rather than wrong: with `impute`
# such a value is kept as NaN, which the transform replaces (a NaN as read is a
# value, and stays a rejection).
MISSING_REASONS = frozenset({"missing value", "empty value", "the file has no such column"})


# The reason of a row that `check_chunk(..., directions=True)` rejects.
NO_DIRECTION = "every feature is 0: the row has no direction, and so no cosine distance"


def check_chunk(
    chunk: Chunk,
    features: List[str],
    passthrough: pa.Schema,
    features_column: str,
    directions: bool = False,
    impute: bool = False,
    weight_column: Optional[str] = None,
    categorical: Sequence[str] = (),
) -> Checked:
    """Validate `chunk` for `features` (numbers) and the `categorical` features (text:
    `_as_categories`; the values go to CATEGORIES_COLUMN, after the features); carry
    the `passthrough` columns, conformed to their types (`conform`), null where the
    chunk's file lacks them. `directions`: a row whose
    features are all 0 is rejected too (cosine distance on unscaled features).
    `weight_column`: each row's weight (`check_weights`) goes to WEIGHT_COLUMN, after
    the features.
    `impute`: a missing, empty or null feature value (MISSING_REASONS) is NaN in
    the valid rows instead of a rejection, and counted in `imputed` (a categorical value
    is then core.categorical.MISSING_VALUE)."""
    batch, n = chunk.batch, chunk.batch.num_rows
    names = batch.schema.names
    x = np.empty((n, len(features)))
    # Each rejected row's reason and column: the first feature (in `features`
    # order) with a problem, else the first passthrough column whose value does
    # not fit its type.
    is_rejected = np.zeros(n, dtype=bool)
    reason = np.full(n, None, dtype=object)
    column = np.full(n, None, dtype=object)
    absent = np.zeros((n, len(features) + len(categorical)), dtype=bool) if impute else None
    j = 0  # the first feature of `name`; a vector column's are j .. j + width - 1
    for name, width in vectors.group(features, present=names):
        span = slice(j, j + (width or 1))
        j = span.stop
        if name not in names:
            x[:, span] = 0.0
            bad, why = np.arange(n), np.full(n, "the file has no such column", dtype=object)
        elif width is None:
            x[:, span.start], bad, why = _as_float(batch.column(name))
        else:
            x[:, span], bad, why = _as_vectors(batch.column(name), width)
        if impute and bad.size:
            gone = np.array([w in MISSING_REASONS for w in why], dtype=bool)
            x[bad[gone], span], absent[bad[gone], span] = np.nan, True
            bad, why = bad[~gone], why[~gone]
        first = ~is_rejected[bad]
        bad = bad[first]
        reason[bad], column[bad], is_rejected[bad] = why[first], name, True
    categories = np.full((n, len(categorical)), "", dtype=object)
    for j, name in enumerate(categorical):
        if name in names:
            categories[:, j], bad, why = _as_categories(batch.column(name))
        else:
            bad, why = np.arange(n), np.full(n, "the file has no such column", dtype=object)
        if impute and bad.size:
            gone = np.array([w in MISSING_REASONS for w in why], dtype=bool)
            categories[bad[gone], j] = MISSING_VALUE
            absent[bad[gone], len(features) + j] = True
            bad, why = bad[~gone], why[~gone]
        first = ~is_rejected[bad]
        bad = bad[first]
        reason[bad], column[bad], is_rejected[bad] = why[first], name, True
    if directions and not categorical:  # (a category is a direction of its own)
        bad = np.flatnonzero(~is_rejected & ~x.any(axis=1))
        reason[bad], is_rejected[bad] = NO_DIRECTION, True
    weights = None
    if weight_column is not None:
        weights, bad, why = check_weights(batch, weight_column)
        first = ~is_rejected[bad]
        bad = bad[first]
        reason[bad], column[bad], is_rejected[bad] = why[first], weight_column, True
    passthrough_columns = []
    for field in passthrough:
        if field.name in names:
            values, bad, why = conform(batch.column(field.name), field.type)
            first = ~is_rejected[bad]
            bad = bad[first]
            reason[bad], column[bad], is_rejected[bad] = why[first], field.name, True
        else:  # a column other files have: null in this one's rows
            values = pa.nulls(n, field.type)
        passthrough_columns.append(values)

    bad = np.flatnonzero(is_rejected)
    rejected = [
        json.dumps({"file": chunk.path, "row": int(r), "column": None, "reason": why, "text": text})
        for r, text, why in chunk.unparsed
    ]
    if bad.size:
        rows = batch.take(pa.array(bad)).to_pylist()
        rejected += [
            json.dumps(
                {
                    "file": chunk.path,
                    "row": int(chunk.rows[i]),
                    "column": column[i],
                    "reason": reason[i],
                    "values": _json_safe(row),
                }
            )
            for i, row in zip(bad, rows)
        ]
    first_error = _first_error(chunk, bad, reason, column)

    good = np.flatnonzero(~is_rejected)
    imputed = None if absent is None else absent[good].sum(axis=0).astype(np.int64)
    valid = None
    if bad.size:  # (else every row is valid: no copies of the chunk's n x D values)
        index = pa.array(good)
        x, passthrough_columns = x[good], [c.take(index) for c in passthrough_columns]
        categories = categories[good]
        weights = None if weights is None else weights[good]
    if good.size:
        weight = [] if weights is None else [pa.array(weights, pa.float64())]
        text = [matrix_to_categories(categories)] if categorical else []
        valid = pa.RecordBatch.from_arrays(
            [matrix_to_features(x)] + text + weight + passthrough_columns,
            names=[features_column]
            + [CATEGORIES_COLUMN] * len(text)
            + [WEIGHT_COLUMN] * len(weight)
            + passthrough.names,
        )
    return Checked(valid, rejected, n + len(chunk.unparsed), first_error, imputed)


def _first_error(chunk: Chunk, bad, reason, column) -> Optional[str]:
    candidates = [(int(r), f"{chunk.path}, row {r}: {why}") for r, _, why in chunk.unparsed]
    if bad.size:
        i = bad[0]
        candidates.append(
            (
                int(chunk.rows[i]),
                f"{chunk.path}, row {chunk.rows[i]}, column {column[i]!r}: {reason[i]}",
            )
        )
    return min(candidates)[1] if candidates else None
