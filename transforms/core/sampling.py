"""The bottom-m sample: a bounded sample that no sharding or ordering can change.

The sample is the m rows with the smallest 64-bit hash of (row content, seed):
a bottom-m sample. Every runner computes the same one, whatever the shards,
bundles or worker count, because a row's hash depends on nothing but its values
and the seed. `transforms.beam.combiners.BottomSampleFn` draws it in a pass;
`transforms.core.seeding` starts the fits from it.
"""

from typing import NamedTuple

import numpy as np


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, vectorised over uint64 (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_hashes(x: np.ndarray, seed: int) -> np.ndarray:
    """uint64 [n]: a hash of each row of float64 `x` [n, D] (its exact bits) and `seed`."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    h = _splitmix64(np.full(len(x), seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
    for j in range(bits.shape[1]):
        h = _splitmix64(h ^ bits[:, j])
    return h


class Sample(NamedTuple):
    """A bottom-m sample: hashes uint64 [m'] ascending, rows float64 [m', D]."""

    hashes: np.ndarray
    rows: np.ndarray


def _bottom(hashes: np.ndarray, rows: np.ndarray, m: int) -> Sample:
    """The m smallest (hash, row) pairs in ascending order; equal hashes by row values."""
    if len(hashes) > m:
        cut = np.partition(hashes, m - 1)[m - 1]
        keep = hashes <= cut
        hashes, rows = hashes[keep], rows[keep]
    order = np.argsort(hashes, kind="stable")
    hashes, rows = hashes[order], rows[order]
    if np.any(hashes[1:] == hashes[:-1]):
        # Duplicate rows share a hash: order them by their values too, so that
        # the sample does not depend on the order rows arrived in (rare: sort all).
        order = np.lexsort(tuple(rows.T[::-1]) + (hashes,))
        hashes, rows = hashes[order], rows[order]
    return Sample(hashes[:m], rows[:m])


class _Bottom:
    """BottomSampleFn's accumulator: a bottom-m Sample, and the batches that may still enter it.

    Merged into the sample only once they hold m rows: merging costs a copy
    of the sample (m x D float64), so merging every batch would copy it once
    a batch; this way it is copied about ln(rows / m) times over a pass.
    n_pending counts their rows: once the sample is full a batch keeps few rows,
    so the list grows long, and summing it on every batch would be quadratic.
    """

    def __init__(self, sample: Sample):
        self.sample, self.pending, self.n_pending = sample, [], 0
