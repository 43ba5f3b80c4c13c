"""Cluster statistics of the final pass: sizes, radii, and the distribution of the
normalized distance, from which an anomaly threshold is read at any contamination.

BigQuery ML's definitions: a cluster's radius is the RMS distance of its rows to its
centroid (for cosine distance, the mean 1 - cos); a row's normalized distance is its
distance over its cluster's radius; `ML.DETECT_ANOMALIES` flags the rows whose
normalized distance is above the (1 - contamination) quantile of the training rows'.

The quantiles come from Apache DataSketches' REQ sketch in high-rank-accuracy mode:
mergeable across workers in any order, and its rank error shrinks toward the top
ranks, where a threshold at a contamination of 1e-4 sits. The sketch is summarized
as a table of (upper-tail probability, quantile) pairs, `TAIL_PROBABILITIES`, that
the model stores and a threshold is interpolated from.
"""

from typing import Iterable, NamedTuple, Optional

import numpy as np

# Upper-tail probabilities the quantile table holds: log-spaced over the
# contaminations a threshold is asked for (1e-4 to 0.5), past both ends, then the
# lower half uniformly (the report draws the whole distribution).
TAIL_PROBABILITIES = np.unique(
    np.concatenate([np.geomspace(1e-5, 0.5, 121), np.linspace(0.5, 1.0, 26)])
)[::-1]

# The REQ sketch's size parameter (an even number; larger: more accurate, larger).
SKETCH_K = 50


class ClusterTotals(NamedTuple):
    """Per-cluster totals of some rows against the final centroids.

    counts:         int64 [K], rows per cluster.
    distance_sums:  float64 [K], sum of squared Euclidean distances (Euclidean
                    fits) or of 1 - cos (cosine fits) of the cluster's rows
                    (weighted fits: each times its row's weight).
    weights:        float64 [K], the rows' weight sums in a weighted fit, else None.
    """

    counts: np.ndarray
    distance_sums: np.ndarray
    weights: Optional[np.ndarray] = None

    @classmethod
    def of_rows(
        cls,
        labels: np.ndarray,
        sq_dist: np.ndarray,
        k: int,
        cosine: bool,
        w: Optional[np.ndarray] = None,
    ):
        """Totals of rows with `labels` int64 [n] and the step's `sq_dist` float32 [n]
        (and weights `w` [n]: a weighted fit's)."""
        values = sq_dist.astype(np.float64) / 2 if cosine else sq_dist.astype(np.float64)
        if w is not None:
            values = values * w
        return cls(
            np.bincount(labels, minlength=k).astype(np.int64),
            np.bincount(labels, weights=values, minlength=k),
            None if w is None else np.bincount(labels, weights=w, minlength=k),
        )


def add_totals(parts: Iterable[ClusterTotals]) -> Optional[ClusterTotals]:
    """Element-wise sum (None for no parts): associative and commutative."""
    parts = list(parts)
    if not parts:
        return None
    weighted = any(p.weights is not None for p in parts)
    return ClusterTotals(
        np.sum([p.counts for p in parts], axis=0),
        np.sum([p.distance_sums for p in parts], axis=0),
        np.sum([p.weights for p in parts], axis=0) if weighted else None,
    )


def cluster_radii(totals: ClusterTotals, cosine: bool) -> np.ndarray:
    """float64 [K]: RMS distance to the centroid (cosine: mean 1 - cos); 0 for an empty cluster.

    Weighted totals: the weighted RMS (weighted mean), as the weighted inertia
    sums it; 0 for a cluster of weight 0.
    """
    sizes = totals.counts if totals.weights is None else totals.weights
    mean = np.divide(
        totals.distance_sums,
        sizes,
        out=np.zeros(len(totals.counts)),
        where=sizes > 0,
    )
    return mean if cosine else np.sqrt(mean)


def normalized_distances(distance: np.ndarray, labels: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """float32 [n]: `distance` [n] over the radius of each row's cluster (`labels` [n]).

    A cluster of radius 0 (identical rows) gives 0 at distance 0 and +inf beyond:
    any other row is infinitely far, relative to its spread.
    """
    r = radii[labels]
    d = distance.astype(np.float64)
    out = np.divide(d, r, out=np.where(d > 0, np.inf, 0.0), where=r > 0)
    return out.astype(np.float32)


class QuantileSketch:
    """A REQ sketch of float values (high ranks accurate), picklable as its bytes."""

    def __init__(self, serialized: Optional[bytes] = None):
        import datasketches

        self._sketch = (
            datasketches.req_floats_sketch(SKETCH_K, True)
            if serialized is None
            else datasketches.req_floats_sketch.deserialize(serialized)
        )

    def update(self, values: np.ndarray) -> "QuantileSketch":
        """Add `values` float32 [n] (+inf is kept: it is above every finite value)."""
        if len(values):
            # The binding takes writable arrays only (an Arrow column's view is not).
            self._sketch.update(np.require(values, np.float32, ["C_CONTIGUOUS", "WRITEABLE"]))
        return self

    def merge(self, other: "QuantileSketch") -> "QuantileSketch":
        self._sketch.merge(other._sketch)  # noqa: SLF001 -- the same class
        return self

    @property
    def n(self) -> int:
        return int(self._sketch.n)

    def tail_quantiles(self, tail: np.ndarray = TAIL_PROBABILITIES) -> np.ndarray:
        """float64 [len(tail)]: the value above which a fraction `tail` of the values lie."""
        if self._sketch.is_empty():
            return np.zeros(len(tail))
        return np.array([self._sketch.get_quantile(float(1.0 - p)) for p in tail], np.float64)

    def __getstate__(self):
        return self._sketch.serialize()

    def __setstate__(self, state):
        self.__init__(state)


class ClusterStats(NamedTuple):
    """What the model and metrics.json keep of the final pass.

    sizes:           int64 [K], rows per cluster.
    radii:           float64 [K], see `cluster_radii`.
    tail:            float64 [Q], upper-tail probabilities (`TAIL_PROBABILITIES`, descending).
    tail_quantiles:  float64 [Q], the normalized distance above which that fraction
                     of the training rows lie (ascending).
    """

    sizes: np.ndarray
    radii: np.ndarray
    tail: np.ndarray
    tail_quantiles: np.ndarray

    def threshold(self, contamination: float) -> float:
        """The normalized distance above which a fraction `contamination` of the training
        rows lie: the anomaly threshold (interpolated in log-probability)."""
        return anomaly_threshold(self.tail, self.tail_quantiles, contamination)

    def quantile(self, q: float) -> float:
        """The q-quantile of the training rows' normalized distance."""
        return self.threshold(1.0 - q)


def anomaly_threshold(tail: np.ndarray, tail_quantiles: np.ndarray, contamination: float) -> float:
    """See `ClusterStats.threshold`; `tail` descending, `tail_quantiles` ascending."""
    x = np.log(np.clip(tail[::-1], 1e-300, None))  # ascending
    y = tail_quantiles[::-1]  # descending with x ascending
    return float(np.interp(np.log(contamination), x, y))
