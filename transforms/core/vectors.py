"""Vector (embedding) columns: one input column of L numbers is L features.

A column holding a list of L numbers a row (a Parquet `list<float>` or
`fixed_size_list`, a tf.Example `float_list` of L values) contributes the L
features `NAME[0]` .. `NAME[L-1]`, in that order, wherever features are named:
the model's feature names, centroids.csv's columns, the report. A scalar column
is one feature under its own name. `columns` is the list of (column, width) the
features come from: width None for a scalar, L for a vector.
"""

import re
from typing import List, Optional, Sequence, Tuple

Columns = List[Tuple[str, Optional[int]]]

_ELEMENT = re.compile(r"(.+)\[(\d+)\]")


def element_names(column: str, width: int) -> List[str]:
    """The L feature names of a vector column: NAME[0] .. NAME[L-1]."""
    return [f"{column}[{i}]" for i in range(width)]


def expand(columns: Columns) -> List[str]:
    """[(column, width)] -> the feature names, a vector column's elements in order."""
    names = []
    for column, width in columns:
        names += [column] if width is None else element_names(column, width)
    return names


def group(features: Sequence[str], present: Sequence[str] = ()) -> Columns:
    """The inverse of `expand`: feature names -> [(column, width)].

    A run NAME[0], NAME[1], .. NAME[L-1] (L >= 2, consecutive from 0) is the
    vector column NAME; any other name is a scalar column, and so is a name that
    is itself in `present` (a column literally called "a[0]").
    """
    columns: Columns = []
    i = 0
    while i < len(features):
        match = _ELEMENT.fullmatch(features[i])
        if match is None or match.group(2) != "0" or features[i] in present:
            columns.append((features[i], None))
            i += 1
            continue
        column, width = match.group(1), 0
        while (
            i + width < len(features)
            and features[i + width] == f"{column}[{width}]"
            and features[i + width] not in present
        ):
            width += 1
        if width < 2:
            columns.append((features[i], None))
            i += 1
            continue
        columns.append((column, width))
        i += width
    return columns
