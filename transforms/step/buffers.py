"""Memory of a step call: rows per call within a budget, and buffers TensorFlow reads in place.

NumPy only: `transforms.beam.shards` allocates its cached shards with
`aligned_empty`, and the step (`transforms.step.step`) sizes its calls here.
"""

from typing import Sequence

import numpy as np

# Rows of a batch for the XLA step are padded up to a power of two (at least
# this), so XLA compiles a handful of shapes, not one per shard length. The
# fused op takes any row count as it comes.
_MIN_BUCKET = 256

# TensorFlow's CPU buffers are 64-byte aligned (EIGEN_MAX_ALIGN_BYTES): a NumPy
# array that is aligned enters a step call without a copy (DLPack), any other is
# copied: a pass over the batch, a sizeable share of the fused step's time
# (bench/RESULTS.md, 'The cost of a round').
TF_ALIGN_BYTES = 64

# Bound on the per-row temporaries of one call (256 MiB). The XLA step's, per
# row and group: the scores (float32 [K_max]), the float64 copy of the row and
# the float32 difference ([D] each); with many candidates, a large K or many
# features a call takes fewer rows (see rows_per_call). The fused op keeps only
# its outputs per row, so it takes far larger calls.
CALL_BUDGET_BYTES = 256 << 20

# Per row and group, what a fused call allocates: the op's label and distance
# (4 + 4 bytes) and the int64 labels of its BatchResult (8).
_FUSED_BYTES_PER_ROW = 16


def call_bytes_per_row(centroids: Sequence[np.ndarray], fused: bool = False) -> int:
    """Bytes of a call's temporaries per row against `centroids` (G arrays [K_g, D])."""
    k_max, d = max(len(c) for c in centroids), centroids[0].shape[1]
    if fused:
        return len(centroids) * _FUSED_BYTES_PER_ROW
    return len(centroids) * (4 * k_max + 12 * d)


def rows_per_call(batch_size: int, centroids: Sequence[np.ndarray], fused: bool = False) -> int:
    """Rows per step call against `centroids`.

    The XLA step: `batch_size`, or a power of two small enough that the call's
    temporaries fit CALL_BUDGET_BYTES. The fused op: as many rows as fit the
    budget (at least `batch_size`). Each call has a runtime cost whatever its
    size (the tf.function, the op's thread pool), large against the op's own
    time at `batch_size` rows (bench/RESULTS.md, 'The cost of a round'); a cached
    shard goes through in a call or two.
    """
    per_row = call_bytes_per_row(centroids, fused)
    if fused:
        return max(batch_size, CALL_BUDGET_BYTES // per_row)
    if batch_size * per_row <= CALL_BUDGET_BYTES:
        return batch_size
    return max(_MIN_BUCKET, 1 << int(np.log2(max(1, CALL_BUDGET_BYTES // per_row))))


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array with TF_ALIGN_BYTES-aligned data."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buf = np.empty(nbytes + TF_ALIGN_BYTES, np.uint8)
    start = -buf.ctypes.data % TF_ALIGN_BYTES
    return buf[start : start + nbytes].view(dtype).reshape(shape)
