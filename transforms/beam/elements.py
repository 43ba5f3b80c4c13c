"""The kinds of element the library PTransforms take, batched with Beam's BatchElements.

`KMeans` and `AssignClusters` accept the same kinds: dict rows, `beam.Row`s (what
Beam SQL, `beam.Select` and schema'd sources give), NumPy [n, D] arrays (columns in
feature order) and Arrow record batches. Beam's `BatchElements` groups them into
lists of at most `max_rows` rows (a record batch or an array counts its rows), so a
DoFn scores rows together instead of one by one.

A row whose feature is missing, null, not a number, NaN or infinite is not scored:
`row_matrix` gives its reason, which the transforms emit as a rejected row
(`rejection`: one JSON object, as the command's dead letter writes them).
"""

import json
import math
import numbers
from typing import List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.core import categorical as categorical_module
from transforms.core import vectors

# The tag of the rejected rows' output.
REJECTED = "rejected"


def rows_in(element) -> int:
    """Rows an element holds: a record batch or array its length, a dict row 1."""
    if isinstance(element, pa.RecordBatch):
        return element.num_rows
    if isinstance(element, np.ndarray):
        return len(element)
    return 1


def batch_elements(max_rows: int) -> beam.BatchElements:
    """Lists of elements holding at most `max_rows` rows (a larger element alone)."""
    return beam.BatchElements(max_batch_size=max_rows, element_size_fn=rows_in)


def split_kinds(elements: list) -> Tuple[List[pa.RecordBatch], List[np.ndarray], List[dict]]:
    """(record batches, arrays, dict rows) of a list from `batch_elements`; a beam.Row
    becomes a dict of its fields."""
    batches, arrays, rows = [], [], []
    for element in elements:
        if isinstance(element, pa.RecordBatch):
            batches.append(element)
        elif isinstance(element, np.ndarray):
            arrays.append(element)
        elif isinstance(element, beam.Row):
            rows.append(element._asdict())
        else:
            rows.append(element)
    return batches, arrays, rows


def _reason(value, name: str) -> Optional[str]:
    """Why `value` cannot be feature `name`'s, or None if it can."""
    if value is None:
        return f"feature {name!r} is null"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"feature {name!r} is not a number: {value!r}"
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float64's range
        return f"feature {name!r} is too large for a float64: {value!r}"
    if not finite:
        return f"feature {name!r} is NaN or infinite"
    return None


def row_matrix(
    rows: Sequence, features: Sequence[str], impute: bool = False
) -> Tuple[np.ndarray, List[Tuple[int, str]]]:
    """Dict rows -> (float64 [n, D] in `features` order, [(index, reason)] of the rows that
    cannot be scored: a feature missing, null, not a number, NaN or infinite (their
    values in the matrix are 0)). A vector column's features NAME[0]..NAME[L-1]
    (transforms.core.vectors) come from the row's NAME, a sequence of L numbers.
    `impute`: a feature (or a whole vector) missing or null is NaN in the matrix, for
    the transform to impute (missing="impute"), not a reason."""
    columns = vectors.group(features)
    x = np.zeros((len(rows), len(features)), np.float64)
    bad = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            bad.append(
                (
                    i,
                    f"a {type(row).__name__} is not a row: take dicts, beam.Rows, "
                    f"NumPy arrays or Arrow record batches",
                )
            )
            continue
        j = 0
        for name, width in columns:
            span = slice(j, j + (width or 1))
            j = span.stop
            if impute and row.get(name) is None:
                x[i, span] = np.nan
                continue
            if name not in row:
                why = f"feature {name!r} is missing"
            elif width is None:
                why = _reason(row[name], name)
            else:
                why = _vector_reason(row[name], name, width)
            if why is not None:
                bad.append((i, why))
                break
            x[i, span] = row[name]
    return x, bad


def row_categories(
    rows: Sequence, categorical: Sequence[str], impute: bool = False
) -> Tuple[np.ndarray, List[Tuple[int, str]]]:
    """Dict rows -> (object [n, C] their categorical features' values as text, in
    `categorical` order (core.categorical.as_text: booleans "true"/"false"); [(index,
    reason)] of the rows with such a feature missing, null, or not a scalar).
    `impute`: a missing or null value is core.categorical.MISSING_VALUE, not a reason."""
    values = np.full((len(rows), len(categorical)), "", dtype=object)
    bad = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            continue  # row_matrix rejects it
        for j, name in enumerate(categorical):
            value = row.get(name)
            text = value.strip() if isinstance(value, str) else value
            # Empty text is no value, as the readers and the model take it.
            if impute and (value is None or text == "" or text == b""):
                values[i, j] = categorical_module.MISSING_VALUE
                continue
            if name not in row:
                why = f"feature {name!r} is missing"
            elif value is None:
                why = f"feature {name!r} is null"
            elif text == "" or text == b"":
                why = f"categorical feature {name!r} is empty"
            elif isinstance(value, (float, np.floating)) and not math.isfinite(value):
                why = f"categorical feature {name!r} is NaN or infinite"
            elif isinstance(value, (dict, list, tuple, np.ndarray)):
                why = f"categorical feature {name!r} is not one value: {value!r}"
            else:
                values[i, j] = categorical_module.as_text(text)
                continue
            bad.append((i, why))
            break
    return values, bad


def weight_reason(value, name: str) -> Optional[str]:
    """Why `value` cannot be a row's weight (column `name`), or None if it can: a weight
    is a finite number >= 0 (0: the row is assigned but moves nothing)."""
    if value is None:
        return f"weight {name!r} is null"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"weight {name!r} is not a number: {value!r}"
    if not math.isfinite(value):
        return f"weight {name!r} is NaN or infinite: {value!r}"
    if value < 0:
        return f"weight {name!r} is negative: {value!r}"
    return None


def row_weights(rows: Sequence, name: str) -> Tuple[np.ndarray, List[Tuple[int, str]]]:
    """Dict rows -> (float64 [n] their weights, column `name`; [(index, reason)] of the
    rows whose weight is missing, null, not a number, NaN, infinite or negative (0 in
    the weights))."""
    w = np.zeros(len(rows), np.float64)
    bad = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            continue  # row_matrix rejects it
        why = f"weight {name!r} is missing" if name not in row else weight_reason(row[name], name)
        if why is not None:
            bad.append((i, why))
        else:
            w[i] = row[name]
    return w, bad


def _vector_reason(value, name: str, width: int) -> Optional[str]:
    """Why `value` cannot be vector column `name`'s (`width` numbers), or None if it can."""
    if value is None:
        return f"feature {name!r} is null"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return f"feature {name!r} is not a list of {width} numbers: {value!r}"
    if len(value) != width:
        return f"feature {name!r} holds {len(value)} values where {width} are expected"
    for element in value:
        why = _reason(element, name)
        if why is not None:
            return f"{why} (an element)"
    return None


def array_rows(
    array: np.ndarray, n_features: int, impute: bool = False
) -> Tuple[np.ndarray, List[Tuple[int, str]]]:
    """A NumPy array of rows [n, D] (or one row [D]) -> (float64 [n, D], [(index, reason)]
    of the rows with a NaN or infinite value). A shape of another width raises.
    `impute`: NaN is a missing value to impute (an array has no null), not a reason."""
    x = np.asarray(array, np.float64)
    x = x[np.newaxis] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"rows of shape {np.shape(array)}; expected [n, {n_features}]")
    if impute:
        bad = np.flatnonzero(np.isinf(x).any(axis=1))
        return x, [(int(i), "a feature is infinite") for i in bad]
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    return x, [(int(i), "a feature is NaN or infinite") for i in bad]


def rejection(row, reason: str) -> str:
    """A rejected row as one JSON line: {"reason", "row"} (NaN and infinities as text,
    values JSON has no type for by their repr)."""
    return json.dumps({"reason": reason, "row": _json_safe(row)}, default=repr)


def _json_safe(value):
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
