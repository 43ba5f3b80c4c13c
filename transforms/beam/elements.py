"""The kinds of element the library PTransforms take, batched with Beam's BatchElements.

`KMeans` and `AssignClusters` accept dict rows, NumPy [n, D] arrays and Arrow
record batches. Beam's `BatchElements` groups them into lists of at most
`max_rows` rows (a record batch or an array counts its rows), so a DoFn scores
dict rows together instead of one by one.
"""

from typing import List, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa


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
    """(record batches, arrays, dict rows) of a list from `batch_elements`."""
    batches, arrays, rows = [], [], []
    for element in elements:
        kind = (
            batches
            if isinstance(element, pa.RecordBatch)
            else arrays
            if isinstance(element, np.ndarray)
            else rows
        )
        kind.append(element)
    return batches, arrays, rows
