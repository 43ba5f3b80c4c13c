"""Size-weighted Ward merging of K fine centroids into K2 groups.

A K-Means fit with a large K summarises the data by K centroids and their
cluster sizes. Merging those centroids with Ward's criterion, each weighted by
its cluster size, approximates Ward clustering of the rows themselves: a
cluster of n rows at centroid c contributes to any within-cluster sum of
squares exactly as n rows sitting at c would (plus its own constant internal
sum of squares, which no merge changes).

    Z, mapping = ward_merge(centroids, sizes, n_groups=4)
    group_of_row = mapping[fine_labels]

Cost of merging clusters a and b (sizes n_a, n_b, centroids c_a, c_b): the
increase in the total within-cluster sum of squares,

    increase = n_a * n_b / (n_a + n_b) * ||c_a - c_b||^2,

and the merged cluster has size n_a + n_b and the size-weighted mean centroid.
The linkage matrix reports `sqrt(2 * increase)` as the merge distance, which
is what `scipy.cluster.hierarchy.linkage(..., method="ward")` reports, so with
all sizes 1 the result is scipy's linkage (up to the order of exact ties), and
every scipy tool that reads a linkage (`fcluster`, `dendrogram`,
`cophenet`, ...) works on it.

Empty clusters (size 0) are kept, because the linkage and the mapping must
cover all K fine clusters: an empty cluster adds nothing to any sum of
squares, so it merges at distance 0, into the non-empty cluster whose centroid
is nearest (Euclidean; lowest index on ties). Those merges are the first rows
of the linkage. They do not move any centroid.

Pure NumPy/SciPy on O(K x D) inputs and an O(K^2) distance matrix; it runs once,
on one worker, after the fit. Never imports `pipeline`.
"""

import logging
import operator
from typing import Tuple

import numpy as np

from transforms.core.lloyd import RoundState


def _check_inputs(centroids, sizes) -> Tuple[np.ndarray, np.ndarray]:
    """Validated copies: centroids float64 [K, D] (finite), sizes float64 [K] (>= 0, some > 0)."""
    c = np.array(centroids, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 1:
        raise ValueError(f"centroids must be a [K, D] array with K >= 1, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("centroids must be finite (no NaN or infinity)")
    w = np.array(sizes, dtype=np.float64)
    if w.shape != (c.shape[0],):
        raise ValueError(
            f"sizes must have shape ({c.shape[0]},) to match centroids {c.shape}, got {w.shape}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("sizes must be finite and >= 0")
    if not np.any(w > 0):
        raise ValueError("sizes are all 0: at least one cluster must be non-empty")
    return c, w


def _ward_sq_dist(c: np.ndarray, w: np.ndarray, i: int, others: np.ndarray) -> np.ndarray:
    """float64 [len(others)]: squared Ward distance, 2 * increase, from cluster i to each of `others`.

    Computed directly from the centroids (not by the Lance-Williams recurrence)
    so no cancellation error builds up over many merges; only clusters with
    w > 0 are ever passed, so the denominator is never 0.
    """
    diff = c[others] - c[i]
    sq = np.einsum("ij,ij->i", diff, diff)
    return 2.0 * w[i] * w[others] / (w[i] + w[others]) * sq


def _label(merges: np.ndarray, n: int) -> np.ndarray:
    """Raw merges -> a SciPy linkage matrix (what scipy's `_hierarchy.label` does).

    merges: float64 [n-1, 3] of (leaf index in a, leaf index in b, distance),
            in any order. Rows are stably sorted by distance, then each leaf
            index is replaced by the id of the cluster holding it at that point
            (leaves 0..n-1, the cluster formed by row i is n+i) using a
            union-find, and the count (number of leaves) is filled in.
    Returns float64 [n-1, 4]: (smaller id, larger id, distance, count).
    """
    order = np.argsort(merges[:, 2], kind="mergesort")  # stable, as scipy
    parent = np.arange(2 * n - 1)
    count = np.ones(2 * n - 1, dtype=np.int64)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    z = np.empty((n - 1, 4), dtype=np.float64)
    for row, i in enumerate(order):
        a, b = find(int(merges[i, 0])), find(int(merges[i, 1]))
        new = n + row
        parent[a] = parent[b] = new
        count[new] = count[a] + count[b]
        z[row] = (min(a, b), max(a, b), merges[i, 2], count[new])
    return z


def ward_linkage(centroids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """SciPy-format linkage of K centroids as points weighted by their cluster sizes.

    centroids: float64 [K, D] (any float dtype is converted), finite.
    sizes:     int64 [K], rows in each cluster, >= 0, at least one > 0. Any
               non-negative finite weights work; sizes 1 give plain Ward.
    Returns Z, float64 [K-1, 4]: row i merges clusters Z[i, 0] and Z[i, 1]
    (ids < K are the fine clusters, id K+i is the cluster formed by row i) at
    distance Z[i, 2] = sqrt(2 * increase in within-cluster sum of squares);
    Z[i, 3] is the number of fine clusters (leaves) in the new cluster, as
    scipy expects, not its number of rows. Distances are non-decreasing.
    Size-0 clusters merge first, at distance 0 (see the module docstring).
    K = 1 gives an empty [0, 4] matrix.

    Algorithm: the nearest-neighbour chain, as scipy uses for Ward (exact for
    Ward, whose merge cost is reducible), O(K^2) time and memory.
    """
    from scipy.spatial.distance import cdist

    c, w = _check_inputs(centroids, sizes)
    n = c.shape[0]
    merges = []  # (leaf in a, leaf in b, distance); a cluster lives at one of its leaves' index

    # Empty clusters: attach each to its nearest non-empty centroid at no cost.
    # The merged cluster keeps the non-empty one's centroid and weight.
    full = np.flatnonzero(w > 0)
    for i in np.flatnonzero(w == 0):
        diff = c[full] - c[i]
        j = full[np.argmin(np.einsum("ij,ij->i", diff, diff))]  # first minimum: lowest index
        merges.append((i, j, 0.0))

    # Ward on the non-empty clusters. d2[i, j] is the squared Ward distance
    # between the clusters stored at slots i and j; inactive slots hold inf.
    m = len(full)
    d2 = np.full((n, n), np.inf)
    wf = w[full]
    d2[np.ix_(full, full)] = (
        2.0 * np.outer(wf, wf) / np.add.outer(wf, wf) * cdist(c[full], c[full], "sqeuclidean")
    )
    np.fill_diagonal(d2, np.inf)
    active = np.zeros(n, dtype=bool)
    active[full] = True
    chain = []
    for _ in range(m - 1):
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        # Walk nearest neighbours until two clusters are each other's nearest.
        while True:
            x = chain[-1]
            y = int(np.argmin(d2[x]))  # lowest index among equal minima, as scipy
            # Prefer the previous chain element on ties: it guarantees the
            # walk ends (scipy's rule too, so tie order matches as far as it can).
            if len(chain) > 1 and d2[x, chain[-2]] <= d2[x, y]:
                y = chain[-2]
                break
            chain.append(y)
        chain.pop()
        chain.pop()
        x, y = min(x, y), max(x, y)
        merges.append((x, y, float(np.sqrt(d2[x, y]))))
        # The merged cluster lives at slot y: size-weighted mean, summed size.
        c[y] = (w[x] * c[x] + w[y] * c[y]) / (w[x] + w[y])
        w[y] += w[x]
        active[x] = False
        d2[x, :] = d2[:, x] = np.inf
        others = np.flatnonzero(active)
        others = others[others != y]
        d2[y, others] = d2[others, y] = _ward_sq_dist(c, w, y, others)

    if n == 1:
        return np.zeros((0, 4), dtype=np.float64)
    return _label(np.asarray(merges, dtype=np.float64), n)


def _check_n_groups(n_groups, k: int) -> int:
    try:
        g = operator.index(n_groups)  # ints and NumPy integers, not floats or strings
    except TypeError:
        raise ValueError(f"n_groups must be an integer in 1..{k}, got {n_groups!r}") from None
    if isinstance(n_groups, bool) or not 1 <= g <= k:
        raise ValueError(
            f"n_groups must be an integer in 1..{k} (the number of fine clusters), got {n_groups!r}"
        )
    return g


def merge_map(linkage: np.ndarray, n_groups: int) -> np.ndarray:
    """Fine cluster -> merged group, cutting the linkage into at most `n_groups` groups.

    linkage:  float64 [K-1, 4], a SciPy linkage (e.g. from `ward_linkage`).
    n_groups: int in 1..K.
    Returns int64 [K]: the group id of each fine cluster, in 0..n_groups-1.
    Groups are numbered by their smallest fine cluster id (the group of fine
    cluster 0 is 0, the next group to appear is 1, ...), so the mapping depends
    only on the tree, never on fcluster's label order.

    The cut is `scipy.cluster.hierarchy.fcluster(Z, n_groups, "maxclust")`:
    exactly n_groups groups, unless merges tie at the cut distance (duplicate
    centroids, several empty clusters), where it cannot split a tie and gives
    fewer.
    """
    from scipy.cluster.hierarchy import fcluster, is_valid_linkage

    z = np.asarray(linkage, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != 4:
        raise ValueError(f"linkage must be a [K-1, 4] matrix, got shape {z.shape}")
    k = z.shape[0] + 1
    g = _check_n_groups(n_groups, k)
    if k == 1:
        return np.zeros(1, dtype=np.int64)
    is_valid_linkage(z, throw=True, name="linkage")
    labels = fcluster(z, g, criterion="maxclust")
    # Renumber: 0-based, in order of each group's first (smallest) fine cluster id.
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.ravel()]


def ward_merge(
    centroids: np.ndarray, sizes: np.ndarray, n_groups: int
) -> Tuple[np.ndarray, np.ndarray]:
    """`ward_linkage` then `merge_map`: (Z float64 [K-1, 4], mapping int64 [K]).

    Raises ValueError naming the value when n_groups is not an integer in 1..K
    (checked before any work is done).
    """
    k = np.shape(centroids)[0] if np.ndim(centroids) == 2 else 0
    if k >= 1:
        _check_n_groups(n_groups, k)
    z = ward_linkage(centroids, sizes)
    return z, merge_map(z, n_groups)


def merge_clusters(state: RoundState, n_groups: int) -> RoundState:
    """`state` with the size-weighted Ward merge of its centroids into `n_groups` groups.

    The size of a cluster is its weight sum in a weighted fit (a cluster of weight
    W at c contributes to any weighted sum of squares as weight W at c would), else
    its row count.
    """
    linkage, mapping = ward_merge(state.centroids, state.sizes, n_groups)
    logging.info("merged %d clusters into %d groups (Ward)", len(state.centroids), n_groups)
    return state._replace(merge_map=mapping.astype(np.int64), linkage=linkage)
