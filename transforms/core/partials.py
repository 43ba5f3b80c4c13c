"""Per-cluster partial statistics of one Lloyd round, and how they merge.

Like Beam's `MeanCombineFn` `(sum, count)` accumulator, widened to K clusters:
the merge is a sum, so it is associative and commutative, and any runner may
combine the partials of any bundles in any order (the CombineFns that do are
in `transforms.beam.combiners`).
"""

from typing import Iterable, NamedTuple

import numpy as np


class Partials(NamedTuple):
    """Partial statistics of some rows against centroids [K, D].

    sums:     float64 [K, D], per-cluster sum of the rows (standardized space).
    counts:   int64 [K], rows per cluster.
    inertia:  float, sum of squared distances to the nearest centroid (cosine:
              of the distances 1 - cos, half the squared distance of unit rows).
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
        return cls(
            np.zeros((k, d)),
            np.zeros(k, np.int64),
            0.0,
            np.zeros(0),
            np.zeros((0, d), np.float32),
            np.zeros(0, np.int64),
        )

    @classmethod
    def from_batch(cls, x: np.ndarray, result, cosine: bool = False) -> "Partials":
        """Partials of batch `x` float32 [n, D] from its `step.step.BatchResult`.

        cosine: `x` holds unit rows and the centroids are unit vectors, where
        1 - cos = |x - c|^2 / 2: the inertia is halved into cosine distances.
        """
        return cls(
            result.sums,
            result.counts,
            result.inertia / 2 if cosine else result.inertia,
            result.far_sq_dist.astype(np.float64),
            x[result.far_rows],
            result.far_labels,
        )


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
