"""Row validation: which rows of a chunk are clustered, and why the others are not.

A row is valid when every selected feature holds exactly one finite number.
Everything else is a rejection with a reason that names the column; nothing is
dropped silently: read == valid + rejected for every chunk.
"""
import json
import math
from typing import List, NamedTuple, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.readers import Chunk
from transforms.shards import matrix_to_features


class Checked(NamedTuple):
    """A validated chunk.

    valid: record batch of the valid rows: `features_column` (list<float64>, D
           values) then the passthrough columns; None when no row is valid.
    raw_features: float64 [n_valid, D], the same values as a matrix.
    rejected: one JSON line per rejected row (file, row, column, reason, values).
    n_read: rows read, rejected ones included.
    first_error: "FILE, row R, column C: reason" of the first rejected row, or None.
    """

    valid: Optional[pa.RecordBatch]
    raw_features: np.ndarray
    rejected: List[str]
    n_read: int
    first_error: Optional[str]


def _as_float(col: pa.Array):
    """(float64 [n], problem [n] (str or None)) for one column of any Arrow type."""
    n = len(col)
    problem = np.full(n, None, dtype=object)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(lengths > 1):
            problem[i] = f"{lengths[i]} values where one is expected"
        starts = col.offsets.to_numpy()[:-1]
        col = pc.take(col.values, pa.array(starts, mask=lengths != 1))
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        text = pc.utf8_trim_whitespace(col)
        empty = pc.fill_null(pc.equal(text, ""), False).to_numpy(zero_copy_only=False)
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        try:
            values = pc.cast(text, pa.float64())
        except pa.ArrowInvalid:  # some value is not a number: find which, in Python
            parsed = []
            for i, v in enumerate(text.to_pylist()):
                try:
                    parsed.append(None if v is None else float(v))
                except ValueError:
                    parsed.append(None)
                    problem[i] = problem[i] or f"non-numeric value {v!r}"
            values = pa.array(parsed, pa.float64())
        for i in np.flatnonzero(empty):
            problem[i] = problem[i] or "empty value"
    elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type):
        values = pc.cast(col, pa.float64())
    else:
        return np.full(n, np.nan), np.full(n, f"value of type {col.type}, not a number", dtype=object)
    x = values.to_numpy(zero_copy_only=False)
    missing = values.is_null().to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(missing):
        problem[i] = problem[i] or "missing value"
    for i in np.flatnonzero(~missing & np.isnan(x)):
        problem[i] = "NaN"
    for i in np.flatnonzero(np.isinf(x)):
        problem[i] = "infinite value"
    return x, problem


def _json_safe(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        elif isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        elif not isinstance(v, (str, int, float, bool, type(None), list)):
            v = str(v)
        out[k] = v
    return out


def check_chunk(chunk: Chunk, features: List[str], passthrough: pa.Schema,
                features_column: str) -> Checked:
    """Validate `chunk` for `features`; carry the `passthrough` columns (cast to their types)."""
    batch, n = chunk.batch, chunk.batch.num_rows
    names = batch.schema.names
    x = np.zeros((n, len(features)))
    reason = np.full(n, None, dtype=object)
    column = np.full(n, None, dtype=object)
    for j, name in enumerate(features):
        if name in names:
            x[:, j], problem = _as_float(batch.column(name))
        else:
            problem = np.full(n, "the file has no such column", dtype=object)
        first = (reason == None) & (problem != None)  # noqa: E711 (elementwise on object arrays)
        reason[first], column[first] = problem[first], name
    passthrough_columns = []
    for field in passthrough:
        if field.name in names:
            passthrough_columns.append(batch.column(field.name).cast(field.type))
        else:
            problem = reason == None  # noqa: E711
            reason[problem], column[problem] = "the file has no such column", field.name
            passthrough_columns.append(pa.nulls(n, field.type))

    bad = np.flatnonzero(reason != None)  # noqa: E711
    rejected = [json.dumps({"file": chunk.path, "row": int(r), "column": None, "reason": why,
                            "text": text}) for r, text, why in chunk.unparsed]
    if bad.size:
        rows = batch.take(pa.array(bad)).to_pylist()
        rejected += [json.dumps({"file": chunk.path, "row": int(chunk.rows[i]),
                                 "column": column[i], "reason": reason[i],
                                 "values": _json_safe(row)}) for i, row in zip(bad, rows)]
    first_error = _first_error(chunk, bad, reason, column)

    good = np.flatnonzero(reason == None)  # noqa: E711
    valid = None
    if good.size:
        index = pa.array(good)
        valid = pa.RecordBatch.from_arrays(
            [matrix_to_features(x[good])] + [c.take(index) for c in passthrough_columns],
            names=[features_column] + passthrough.names)
    return Checked(valid, x[good], rejected, n + len(chunk.unparsed), first_error)


def _first_error(chunk: Chunk, bad, reason, column) -> Optional[str]:
    candidates = [(int(r), f"{chunk.path}, row {r}: {why}") for r, _, why in chunk.unparsed]
    if bad.size:
        i = bad[0]
        candidates.append((int(chunk.rows[i]),
                           f"{chunk.path}, row {chunk.rows[i]}, column {column[i]!r}: {reason[i]}"))
    return min(candidates)[1] if candidates else None
