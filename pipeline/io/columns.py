"""Which input columns a fit uses, which it does not and why, and which look like identifiers.

Without --features every numeric column but --id_column is a feature: a row
number or a customer id would be clustered on, silently. `unused_columns` says
why each other column is left out; `identifier_like` names the features that
look like identifiers, by their name or by holding a different whole number in
each row of a small sample of the first file (its first rows: no pass over the
data).
"""

import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Rows of the first file looked at for columns of unique whole numbers, and the fewest
# non-null values that say anything (a few distinct values are unique by chance).
_SAMPLE_ROWS = 1000
_MIN_SAMPLE = 20
# A name whose last word (snake_case, camelCase, spaces) is one of these names a row,
# not a measure: id, customer_id, userId, row, uuid, key, index, ...
_ID_WORDS = frozenset(
    {"id", "ids", "uuid", "guid", "key", "idx", "index", "pk", "rowid", "row", "rownum"}
    | {"recno", "serial"}
)
# pandas' index as written to a file: "Unnamed: 0" (CSV), "__index_level_0__" (Parquet).
_PANDAS_INDEX = re.compile(r"^(unnamed: ?\d+|__index_level_\d+__)$", re.IGNORECASE)
# At most this many names listed in a log line, then "and N more".
_MAX_NAMES = 30


def name_is_identifier(name: str) -> bool:
    """Whether a column's name says it identifies rows: `id`, `*_id`, `userId`, `uuid`,
    `row`, `index`, `Unnamed: 0`, ... (not `paid`, `valid`, `row_count`)."""
    if _PANDAS_INDEX.match(name.strip()):
        return True
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    words = [w for w in words if w]
    return bool(words) and (words[-1] in _ID_WORDS or words[0] == "id")


def unique_whole_numbers(values: pa.Array) -> bool:
    """Whether a sample of a column (numbers, or CSV text) holds a different whole number
    in each row, none missing, in at least _MIN_SAMPLE rows."""
    from pipeline.io.readers import parse_numbers

    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values, _ = parse_numbers(pc.utf8_trim_whitespace(values))
    elif not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        return False
    if len(values) < _MIN_SAMPLE or values.null_count:
        return False
    x = values.to_numpy(zero_copy_only=False).astype(np.float64)
    return bool(np.all(np.isfinite(x)) and np.all(x == np.round(x)) and len(np.unique(x)) == len(x))


def first_rows(path: str, fmt: str, columns: List[str]) -> Dict[str, pa.Array]:
    """The first _SAMPLE_ROWS values of `columns` in one file (those it has), as read;
    {} when it cannot be read."""
    from pipeline.io.readers import read_chunks
    from transforms.core.errors import UserInputError

    parts: Dict[str, List[pa.Array]] = {}
    n = 0
    try:
        for chunk in read_chunks(path, fmt, _SAMPLE_ROWS):
            for name in columns:
                if name in chunk.batch.schema.names:
                    parts.setdefault(name, []).append(chunk.batch.column(name))
            n += chunk.batch.num_rows
            if n >= _SAMPLE_ROWS:
                break
    except UserInputError:  # (FileUnreadable too) the job reports the file when it reads it
        return {}
    sample = {}
    for name, arrays in parts.items():
        kinds = {a.type for a in arrays}
        if len(kinds) == 1:  # (TFRecord groups may differ in kind: not a column of numbers)
            sample[name] = pa.concat_arrays(arrays)[:_SAMPLE_ROWS]
    return sample


def identifier_like(features: List[str], sample: Dict[str, pa.Array]) -> List[Tuple[str, str]]:
    """[(feature, why it looks like an identifier)] for the `features` whose name says so
    or whose `sample` (first_rows) holds a different whole number in every row."""
    found = []
    for name in features:
        if name_is_identifier(name):
            found.append((name, "its name"))
        elif name in sample and unique_whole_numbers(sample[name]):
            found.append(
                (name, f"a different whole number in each of its first {len(sample[name])} rows")
            )
    return found


def unused_columns(
    schema: pa.Schema, numeric: List[str], features: List[str], id_column: Optional[str], fmt: str
) -> List[Tuple[str, str]]:
    """[(column, why it is no feature)] for every column of `schema` not in `features`;
    `numeric` are the candidate features (io.layout.InputLayout.numeric)."""
    from pipeline.io.layout import column_conflict
    from pipeline.io.readers import is_list

    unused = []
    for field in schema:
        if field.name in features:
            continue
        kind = field.type
        if field.name == id_column:
            why = "the --id_column"
        elif field.name in numeric:
            why = "not in --features"
        elif column_conflict(field):
            why = "its type differs between files"
        elif is_list(kind):
            why = "a list (--features NAME clusters its rows of one value)"
        elif pa.types.is_null(kind):
            why = "no values in the rows read"
        elif fmt == "csv":
            why = (
                "mostly not numbers in the rows sampled; --features NAME clusters it as a category"
            )
        elif _is_categorical(kind):
            why = f"{kind}: --features NAME clusters it as a category"
        else:
            why = f"non-numeric type {kind}"
        unused.append((field.name, why))
    return unused


def _is_categorical(kind: pa.DataType) -> bool:
    """Text or booleans: what --features takes as a category."""
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_dictionary(kind)
    )


def _names(names: List[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    more = len(names) - _MAX_NAMES
    return f"{shown}, and {more} more" if more > 0 else shown


def columns_line(features: List[str], unused: List[Tuple[str, str]]) -> str:
    """The one line a fit logs: the features used, each column not used and why."""
    line = f"features ({len(features)}): {_names(features)}"
    if unused:
        line += "; not used: " + _names([f"{name} ({why})" for name, why in unused])
    return line


def identifier_warning(name: str, why: str, features: List[str], flagged: List[str]) -> str:
    """The warning for one identifier-like feature, with the flags that fix it: the
    --features suggested are `features` without any of the `flagged` ones."""
    others = [f for f in features if f not in flagged]
    fix = f"--id_column {name}"
    if others:
        fix += f" (or --features {','.join(others)})"
    return (
        f"column {name!r} looks like an identifier ({why}) but is clustered on as a "
        f"feature: pass {fix}"
    )
