"""Initial centroids from a bounded sample that no sharding or ordering can change.

The sample is the bottom-m sample of `transforms.core.sampling`: every runner
computes the same one. k-means++ (scikit-learn's `kmeans_plusplus`) then runs on the
sample's first rows in hash order (`seeding_rows`), and each start's inertia on
the sample can choose among restarts (`transforms.beam.candidates.InitialCandidates`).
"""

from typing import Optional

import numpy as np

from transforms.core.errors import UserInputError
from transforms.core.lloyd import RoundState
from transforms.core.parameters import INIT_METHODS


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
    sample: np.ndarray,
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
        with threadpool_limits(limits=1, user_api="blas"):
            centers, _ = kmeans_plusplus(
                sample[: seeding_rows(n_clusters)], n_clusters, random_state=seed
            )
    elif init == "random":
        rows = np.random.RandomState(seed).choice(len(sample), n_clusters, replace=False)
        centers = sample[rows]
    else:
        raise ValueError(f"init={init!r} is not one of {INIT_METHODS} or a centroids file")
    if spherical:
        centers = _unit_rows(np.asarray(centers, np.float64))
        if refine_rounds > 0:
            centers = spherical_lloyd(sample, centers, refine_rounds, tol)
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
                .fit(sample)
                .cluster_centers_
            )
    return np.asarray(centers, dtype=np.float64)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows of `a` [n, D] divided by their L2 norms (a zero row stays zero)."""
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def spherical_lloyd(sample: np.ndarray, centers: np.ndarray, rounds: int, tol: float) -> np.ndarray:
    """Up to `rounds` spherical Lloyd rounds on unit rows `sample` float64 [m, D] from unit
    `centers` [K, D]: each row to the centroid of largest dot product, each centroid its
    rows' sum over the sum's norm (an empty cluster keeps its centroid); stops once the
    total squared shift is <= tol. What `lloyd.lloyd_update(spherical=True)` does over
    all rows, here in memory."""
    from sklearn.metrics import pairwise_distances_argmin

    for _ in range(rounds):
        # Unit rows and centroids: the nearest by Euclidean distance is the largest dot.
        labels = pairwise_distances_argmin(sample, centers)  # chunked: bounded memory
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, sample)
        norms = np.linalg.norm(sums, axis=1)
        moved = centers.copy()
        moved[norms > 0] = sums[norms > 0] / norms[norms > 0, None]
        shift = float(np.sum((moved - centers) ** 2))
        centers = moved
        if shift <= tol:
            break
    return centers


def sample_inertia(sample: np.ndarray, centroids: np.ndarray, cosine: bool = False) -> float:
    """Sum of squared distances of `sample` float64 [m, D] rows to their nearest of
    `centroids` float64 [K, D]; `cosine` (unit rows and centroids): of 1 - cos."""
    from sklearn.metrics import pairwise_distances_argmin_min

    _, distances = pairwise_distances_argmin_min(sample, centroids)  # chunked: bounded memory
    total = float(np.sum(distances**2))
    return total / 2 if cosine else total


def _initial_state(
    start,
    sample: np.ndarray,
    init: str,
    given: Optional[np.ndarray],
    refine_rounds: int,
    tol: float,
    spherical: bool = False,
):
    """(index, (K, seed)) -> (index, RoundState of that start's initial centroids, their
    inertia on the sample)."""
    index, (k, seed) = start
    if len(sample) < k:
        raise UserInputError(f"--k {k} is larger than the number of valid rows ({len(sample)})")
    centroids = initial_centroids(sample, k, init, seed, given, refine_rounds, tol, spherical)
    return index, RoundState(centroids=centroids), sample_inertia(sample, centroids, spherical)
