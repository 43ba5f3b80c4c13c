"""Per-cluster partial statistics of one Lloyd round, and the CombineFn that merges them.

Like Beam's `MeanCombineFn` `(sum, count)` accumulator, widened to K clusters:
the merge is a sum, so it is associative and commutative, and any runner may
combine the partials of any bundles in any order.
"""
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
import numpy as np


class Partials(NamedTuple):
    """Partial statistics of some rows against centroids [K, D].

    sums:     float64 [K, D], per-cluster sum of the rows (standardized space).
    counts:   int64 [K], rows per cluster.
    inertia:  float, sum of squared distances to the nearest centroid.
    far_dist: float64 [c], squared distances of the rows farthest from their
              centroid, farthest first (c <= n_far).
    far_rows: float32 [c, D], those rows.
    far_labels: int64 [c], their clusters.
    """

    sums: np.ndarray
    counts: np.ndarray
    inertia: float
    far_dist: np.ndarray
    far_rows: np.ndarray
    far_labels: np.ndarray

    @classmethod
    def zeros(cls, k: int, d: int) -> "Partials":
        return cls(np.zeros((k, d)), np.zeros(k, np.int64), 0.0, np.zeros(0),
                   np.zeros((0, d), np.float32), np.zeros(0, np.int64))

    @classmethod
    def from_batch(cls, x: np.ndarray, result) -> "Partials":
        """Partials of batch `x` float32 [n, D] from its `kmeans_step.BatchResult`."""
        return cls(result.sums, result.counts, result.inertia,
                   result.far_sq_dist.astype(np.float64), x[result.far_rows], result.far_labels)


def merge(parts: Iterable[Partials], n_far: int) -> Partials:
    """Sum the statistics; keep the `n_far` farthest rows overall.

    Ties in distance are broken by cluster and then by the row's values, so the
    kept candidates do not depend on the order the partials arrive in.
    """
    parts = list(parts)
    far_dist = np.concatenate([p.far_dist for p in parts])
    far_rows = np.concatenate([p.far_rows for p in parts])
    far_labels = np.concatenate([p.far_labels for p in parts])
    order = np.lexsort(tuple(far_rows.T[::-1]) + (far_labels, -far_dist))[:n_far]
    return Partials(
        sums=np.sum([p.sums for p in parts], axis=0),
        counts=np.sum([p.counts for p in parts], axis=0),
        inertia=float(sum(p.inertia for p in parts)),
        far_dist=far_dist[order],
        far_rows=far_rows[order],
        far_labels=far_labels[order],
    )


class PartialsCombineFn(beam.CombineFn):
    """Merges the `Partials` of all workers into one.

    The accumulator starts as None (nothing yet), so the CombineFn needs not
    know K: the candidates of a sweep have different Ks, and the final pass
    sees the K the sweep chose. An empty input gives None.
    """

    def __init__(self, n_far: int = 16):
        self._n_far = n_far

    def create_accumulator(self) -> Optional[Partials]:
        return None

    def add_input(self, accumulator: Optional[Partials], element: Partials) -> Partials:
        return element if accumulator is None else merge([accumulator, element], self._n_far)

    def merge_accumulators(self, accumulators: Iterable[Optional[Partials]]) -> Optional[Partials]:
        parts = [a for a in accumulators if a is not None]
        return merge(parts, self._n_far) if parts else None

    def extract_output(self, accumulator: Optional[Partials]) -> Optional[Partials]:
        return accumulator


class CandidatePartialsCombineFn(beam.CombineFn):
    """Merges tuples of Partials, one per candidate fit (restarts, Ks), element-wise.

    Like `PartialsCombineFn`, it needs not know the candidates' Ks; an empty
    input gives None.
    """

    def __init__(self, n_far: int = 16):
        self._n_far = n_far

    def create_accumulator(self) -> Optional[tuple]:
        return None

    def add_input(self, accumulator: Optional[tuple], element: tuple) -> tuple:
        return self.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators: Iterable[Optional[tuple]]) -> Optional[tuple]:
        accumulators = [a for a in accumulators if a is not None]
        if len(accumulators) < 2:
            return tuple(accumulators[0]) if accumulators else None
        return tuple(merge(parts, self._n_far) for parts in zip(*accumulators))

    def extract_output(self, accumulator: Optional[tuple]) -> Optional[tuple]:
        return accumulator
