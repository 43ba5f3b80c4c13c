"""Per-cluster partial statistics of one Lloyd round, and how they merge.

Like Beam's `MeanCombineFn` `(sum, count)` accumulator, widened to K clusters:
the merge is a sum, so it is associative and commutative, and any runner may
combine the partials of any bundles in any order (the CombineFns that do are
in `transforms.beam.combiners`).
"""

from typing import Iterable, NamedTuple, Optional

import numpy as np


class Partials(NamedTuple):
    """Partial statistics of some rows against centroids [K, D].

    sums:     float64 [K, D], per-cluster sum of the rows (standardized space),
              each row times its weight in a weighted fit.
    counts:   int64 [K], rows per cluster (whatever their weights).
    inertia:  float, sum of squared distances to the nearest centroid (cosine:
              of the distances 1 - cos, half the squared distance of unit rows),
              each times its row's weight in a weighted fit.
    far_dist: float64 [c], squared distances of the rows farthest from their
              centroid, farthest first (c <= n_far); in a weighted fit only rows
              of positive weight (a row of weight 0 cannot re-seed a cluster).
    far_rows: float32 [c, D], those rows.
    far_labels: int64 [c], their clusters.
    weights:  float64 [K], per-cluster sum of the rows' weights; None in an
              unweighted fit, where it is `counts` (see `weight_sums`).
    far_weights: float64 [c], the far rows' weights; None: all 1.
    """

    sums: np.ndarray
    counts: np.ndarray
    inertia: float
    far_dist: np.ndarray
    far_rows: np.ndarray
    far_labels: np.ndarray
    weights: Optional[np.ndarray] = None
    far_weights: Optional[np.ndarray] = None

    @property
    def weight_sums(self) -> np.ndarray:
        """float64 [K]: per-cluster weight sums (the row counts in an unweighted fit)."""
        return self.counts.astype(np.float64) if self.weights is None else self.weights

    @property
    def far_weight_values(self) -> np.ndarray:
        """float64 [c]: the far rows' weights (1 in an unweighted fit)."""
        return np.ones(len(self.far_dist)) if self.far_weights is None else self.far_weights

    @classmethod
    def zeros(cls, k: int, d: int, weighted: bool = False) -> "Partials":
        return cls(
            np.zeros((k, d)),
            np.zeros(k, np.int64),
            0.0,
            np.zeros(0),
            np.zeros((0, d), np.float32),
            np.zeros(0, np.int64),
            np.zeros(k) if weighted else None,
            np.zeros(0) if weighted else None,
        )

    @classmethod
    def from_batch(
        cls, x: np.ndarray, result, cosine: bool = False, w: Optional[np.ndarray] = None
    ) -> "Partials":
        """Partials of batch `x` float32 [n, D] from its `step.step.BatchResult`.

        cosine: `x` holds unit rows and the centroids are unit vectors, where
        1 - cos = |x - c|^2 / 2: the inertia is halved into cosine distances.
        w: float32 [n] the rows' weights, which the step was given (None: unweighted).
        """
        inertia = result.inertia / 2 if cosine else result.inertia
        if w is None:
            return cls(
                result.sums,
                result.counts,
                inertia,
                result.far_sq_dist.astype(np.float64),
                x[result.far_rows],
                result.far_labels,
            )
        far = w[result.far_rows] > 0
        rows = result.far_rows[far]
        return cls(
            result.sums,
            result.counts,
            inertia,
            result.far_sq_dist[far].astype(np.float64),
            x[rows],
            result.far_labels[far],
            result.weights,
            w[rows].astype(np.float64),
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
    weighted = any(p.weights is not None for p in parts)
    far_weights = np.concatenate([p.far_weight_values for p in parts])
    # The weight breaks ties too: two equal rows of different weights in any order.
    order = np.lexsort((far_weights,) + tuple(far_rows.T[::-1]) + (far_labels, -far_dist))
    order = order[:n_far]
    return Partials(
        sums=np.sum([p.sums for p in parts], axis=0),
        counts=np.sum([p.counts for p in parts], axis=0),
        inertia=float(sum(p.inertia for p in parts)),
        far_dist=far_dist[order],
        far_rows=far_rows[order],
        far_labels=far_labels[order],
        weights=np.sum([p.weight_sums for p in parts], axis=0) if weighted else None,
        far_weights=far_weights[order] if weighted else None,
    )
