"""Initial centroids from a bounded sample that no sharding or ordering can change.

The sample is the bottom-m sample of `transforms.core.sampling`: every runner
computes the same one. k-means++ (scikit-learn's `kmeans_plusplus`) then runs on the
sample's first rows in hash order (`seeding_rows`), and each start's inertia on
the sample can choose among restarts (`transforms.beam.candidates.InitialCandidates`).

A weighted fit's sample is a `sampling.Sample` (priority keys, standardized
rows, the rows' weights): every step here then weighs each sampled row by its
priority-sampling weight (`sampling.priority_weights`), as scikit-learn's
`sample_weight`: k-means++ draws with D^2 w, a random start draws rows in
proportion to w, the refinement is weighted Lloyd, the inertia weighted.
"""

from typing import Optional, Tuple, Union

import numpy as np

from transforms.core.errors import UserInputError
from transforms.core.lloyd import RoundState
from transforms.core.parameters import INIT_METHODS
from transforms.core.sampling import Sample, priority_weights

# The init sample: float64 [m, D] rows, or a weighted Sample of them.
InitSample = Union[np.ndarray, Sample]


def sample_rows(
    sample: InitSample, r: Optional[int] = None
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(rows float64 [r', D], weights float64 [r'] or None): the first `r` rows (default all)
    of an init sample and, weighted, their priority-sampling weights."""
    if isinstance(sample, Sample):
        r = len(sample.rows) if r is None else min(r, len(sample.rows))
        return sample.rows[:r], priority_weights(sample, r)
    return (sample if r is None else sample[:r]), None


def seeding_rows(n_clusters: int) -> int:
    """Rows of the init sample k-means++ draws from: max(20000, 50 K).

    The sample is in hash order, so its first rows are a uniform subsample, as
    the init_size rows scikit-learn's MiniBatchKMeans seeds on. k-means++
    costs rows x K x its local trials, so each start's time grows with the rows
    it draws from (bench/RESULTS.md, 'Fixed costs'); the Lloyd refinement that
    follows uses the whole sample.
    """
    return max(20_000, 50 * n_clusters)


def initial_centroids(
    sample: InitSample,
    n_clusters: int,
    init: str,
    seed: int,
    given: Optional[np.ndarray] = None,
    refine_rounds: int = 0,
    tol: float = 0.0,
    spherical: bool = False,
) -> np.ndarray:
    """float64 [K, D] initial centroids from `sample` float64 [m, D] (standardized, hash order).

    init: "k-means++" (scikit-learn's kmeans_plusplus with `seed`, on the
    first `seeding_rows(K)` rows of the sample), "random" (K distinct sample
    rows drawn with `seed`), or "given" (`given` [K, D], used as they are).
    k-means++ and random starts are then refined by up to `refine_rounds`
    Lloyd rounds on the whole sample, in memory (scikit-learn, same `tol`): a
    better start costs the full passes nothing, and the passes that follow
    are still exact Lloyd over all rows.
    spherical (cosine distance): the sample's rows are unit vectors, where the
    squared Euclidean distance k-means++ draws with is 2 (1 - cos); given
    centroids are normalized, and the refinement is spherical (`spherical_lloyd`).
    A weighted `sample` (a Sample): every draw and round weighted (module doc).
    """
    if init == "given":
        given = np.asarray(given, dtype=np.float64)
        return _unit_rows(given) if spherical else given
    if init == "k-means++":
        from sklearn.cluster import kmeans_plusplus
        from threadpoolctl import threadpool_limits

        # Its distances go to a few candidates at a time: products too small for
        # two BLAS threads, whose hand-offs cost more than the second thread saves
        # (bench/RESULTS.md, 'Fixed costs'). OpenBLAS splits a product's output
        # between threads, so one thread gives the same centers, bit for bit.
        rows, w = sample_rows(sample, seeding_rows(n_clusters))
        if w is not None and np.count_nonzero(w) < n_clusters:
            rows, w = sample_rows(sample)  # the prefix has too few rows of positive weight
        with threadpool_limits(limits=1, user_api="blas"):
            centers, _ = kmeans_plusplus(rows, n_clusters, sample_weight=w, random_state=seed)
    elif init == "random":
        rows, w = sample_rows(sample)
        # scikit-learn's random init with sample_weight: rows drawn in proportion to w.
        p = None if w is None else w / w.sum()
        chosen = np.random.RandomState(seed).choice(len(rows), n_clusters, replace=False, p=p)
        centers = rows[chosen]
    else:
        raise ValueError(f"init={init!r} is not one of {INIT_METHODS} or a centroids file")
    rows, w = sample_rows(sample)
    if spherical:
        centers = _unit_rows(np.asarray(centers, np.float64))
        if refine_rounds > 0:
            centers = spherical_lloyd(rows, centers, refine_rounds, tol, w)
    elif refine_rounds > 0:
        import warnings

        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            # fewer distinct rows than K: the full passes re-seed the empty clusters
            warnings.simplefilter("ignore", ConvergenceWarning)
            centers = (
                KMeans(
                    n_clusters,
                    init=centers,
                    n_init=1,
                    max_iter=refine_rounds,
                    tol=tol,
                    algorithm="lloyd",
                )
                .fit(rows, sample_weight=w)
                .cluster_centers_
            )
    return np.asarray(centers, dtype=np.float64)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows of `a` [n, D] divided by their L2 norms (a zero row stays zero)."""
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def spherical_lloyd(
    sample: np.ndarray,
    centers: np.ndarray,
    rounds: int,
    tol: float,
    weights: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Up to `rounds` spherical Lloyd rounds on unit rows `sample` float64 [m, D] from unit
    `centers` [K, D]: each row to the centroid of largest dot product, each centroid its
    rows' sum (weighted by `weights` float64 [m], if given) over the sum's norm (an empty
    cluster keeps its centroid); stops once the total squared shift is <= tol. What
    `lloyd.lloyd_update(spherical=True)` does over all rows, here in memory."""
    weighted = sample if weights is None else sample * weights[:, None]
    from sklearn.metrics import pairwise_distances_argmin

    for _ in range(rounds):
        # Unit rows and centroids: the nearest by Euclidean distance is the largest dot.
        labels = pairwise_distances_argmin(sample, centers)  # chunked: bounded memory
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, weighted)
        norms = np.linalg.norm(sums, axis=1)
        moved = centers.copy()
        moved[norms > 0] = sums[norms > 0] / norms[norms > 0, None]
        shift = float(np.sum((moved - centers) ** 2))
        centers = moved
        if shift <= tol:
            break
    return centers


def sample_inertia(sample: InitSample, centroids: np.ndarray, cosine: bool = False) -> float:
    """Sum of squared distances of `sample` float64 [m, D] rows (weighted: times their
    weights) to their nearest of `centroids` float64 [K, D]; `cosine` (unit rows and
    centroids): of 1 - cos."""
    from sklearn.metrics import pairwise_distances_argmin_min

    rows, w = sample_rows(sample)
    _, distances = pairwise_distances_argmin_min(rows, centroids)  # chunked: bounded memory
    sq = distances**2
    total = float(np.sum(sq if w is None else sq * w))
    return total / 2 if cosine else total


def _initial_state(
    start,
    sample: InitSample,
    init: str,
    given: Optional[np.ndarray],
    refine_rounds: int,
    tol: float,
    spherical: bool = False,
):
    """(index, (K, seed)) -> (index, RoundState of that start's initial centroids, their
    inertia on the sample)."""
    index, (k, seed) = start
    rows, w = sample_rows(sample)
    if len(rows) < k:
        raise UserInputError(f"--k {k} is larger than the number of valid rows ({len(rows)})")
    if w is not None and init != "given" and np.count_nonzero(w) < k:
        raise UserInputError(
            f"--k {k} is larger than the number of rows of positive weight in the init "
            f"sample ({np.count_nonzero(w)})"
        )
    centroids = initial_centroids(sample, k, init, seed, given, refine_rounds, tol, spherical)
    return index, RoundState(centroids=centroids), sample_inertia(sample, centroids, spherical)
