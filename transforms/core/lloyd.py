"""The Lloyd update: merged partial sums -> next centroids, with empty-cluster re-seeding.

Pure NumPy on O(K x D) state; it runs once per round, on one worker, after the
combine. It follows scikit-learn's `_kmeans_single_lloyd` exactly: new
centroids are sums / counts; an empty cluster takes the row farthest from its
centroid (that row leaves its old cluster's sums); the run stops when the total
squared centroid shift is <= tol. Weighted (sample weights), as scikit-learn's
with `sample_weight`: the sums are of w x, the counts become weight sums, and a
cluster is empty when its weight sum is 0.
"""

import logging
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from transforms.core.partials import Partials

# Its own logger: the CLI, which prints each round from the job's metrics on every
# runner (pipeline/progress.py), hides this one's INFO lines, which only an
# in-process runner's console would show.
_LOG = logging.getLogger(__name__)


class RoundState(NamedTuple):
    """The state carried from one round to the next (a side input, tiny).

    centroids: float64 [K, D], standardized space.
    rounds: number of Lloyd updates done so far.
    converged: the last update moved the centroids by a total squared shift <= tol.
    inertia_history: inertia of each round against its starting centroids.
    reseeded: total number of empty clusters re-seeded so far.
    counts: int64 [K], rows per cluster in the last round (after re-seeding).
    weights: float64 [K], their weight sums in a weighted fit (else None).
    merge_map: int64 [K], fine cluster -> merged group (see transforms.core.hierarchy), or None.
    linkage: float64 [K-1, 4], the Ward linkage behind merge_map, or None.
    """

    centroids: np.ndarray
    rounds: int = 0
    converged: bool = False
    inertia_history: Tuple[float, ...] = ()
    reseeded: int = 0
    counts: Optional[np.ndarray] = None
    merge_map: Optional[np.ndarray] = None
    linkage: Optional[np.ndarray] = None
    weights: Optional[np.ndarray] = None

    @property
    def sizes(self) -> Optional[np.ndarray]:
        """float64 [K]: the clusters' weight sums (the row counts unweighted), or None."""
        if self.weights is not None:
            return self.weights
        return None if self.counts is None else self.counts.astype(np.float64)


class Candidates(NamedTuple):
    """Candidate fits that run together, in the same passes over the data.

    The restarts of `--n_init` and the Ks of a sweep: each round's step scores
    every row against all candidates' centroids at once (one matrix product)
    and keeps one set of partial sums per candidate.

    states: one RoundState per candidate.
    seeds:  the seed each candidate's initialisation drew with (None: given centroids).
    tried:  every start drawn on the init sample, in start order: {"k", "seed",
            "sample_inertia" (against its initial centroids, init sample,
            standardized space), "carried" (True when it is one of `states`)}.
            With restarts on the sample, only the best start of each K is carried.
    """

    states: Tuple[RoundState, ...]
    seeds: Tuple[Optional[int], ...]
    tried: Tuple[dict, ...] = ()

    @property
    def converged(self) -> bool:
        return all(state.converged for state in self.states)


def relocate_empty_clusters(
    partials: Partials,
) -> Tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Give every empty cluster (weight sum 0) one of the rows farthest from their centroids.

    Returns (sums float64 [K, D], counts int64 [K], number re-seeded, weight sums
    float64 [K]). As in scikit-learn, the i-th empty cluster (by index) takes the
    i-th farthest row (of positive weight), whose old cluster loses it: its
    weighted sum w x and its weight w.
    """
    sums, counts = partials.sums.copy(), partials.counts.copy()
    weights = partials.weight_sums.copy()
    empty = np.flatnonzero(weights == 0)
    if empty.size == 0:
        return sums, counts, 0, weights
    n = min(empty.size, partials.far_dist.size)
    if n < empty.size:
        logging.warning(
            "%d empty clusters but only %d re-seeding candidates; raise n_far", empty.size, n
        )
    far_weights = partials.far_weight_values
    for cluster, row, old, w in zip(
        empty[:n], partials.far_rows[:n], partials.far_labels[:n], far_weights[:n]
    ):
        # Unweighted, w is 1: the row itself moves.
        moved = row * w if partials.weights is not None else row
        sums[old] -= moved
        counts[old] -= 1
        weights[old] -= w
        sums[cluster] = moved
        counts[cluster] += 1  # (0 unweighted; weighted, its rows of weight 0 stay)
        weights[cluster] = w
    logging.warning(
        "re-seeded %d empty cluster(s) %s with the farthest rows", n, empty[:n].tolist()
    )
    return sums, counts, n, weights


def lloyd_update(
    state: RoundState, partials: Partials, tol: float, label: str = "", spherical: bool = False
) -> RoundState:
    """One Lloyd update of `state` from the round's merged `partials` (`label` names it in logs).

    spherical (cosine distance, unit rows): each new centroid is its cluster's
    sum divided by the sum's L2 norm, not by the count (a zero sum keeps the
    centroid it had). Weighted partials: the weighted mean (spherical: the
    normalized weighted sum); a cluster of weight 0 keeps its centroid.
    """
    if state.converged:
        return state
    sums, counts, reseeded, weights = relocate_empty_clusters(partials)
    centroids = state.centroids.copy()
    nonempty = weights > 0
    if spherical:
        norms = np.linalg.norm(sums, axis=1)
        nonempty &= norms > 0
        centroids[nonempty] = sums[nonempty] / norms[nonempty, None]
    else:
        centroids[nonempty] = sums[nonempty] / weights[nonempty, None]
    shift = np.sum((centroids - state.centroids) ** 2, axis=1)
    new = RoundState(
        centroids=centroids,
        rounds=state.rounds + 1,
        converged=bool(shift.sum() <= tol),
        inertia_history=state.inertia_history + (partials.inertia,),
        reseeded=state.reseeded + reseeded,
        counts=counts,
        weights=None if partials.weights is None else weights,
    )
    _LOG.info(
        "round %d%s: inertia %.6g, largest shift %.3g, total squared shift %.3g%s",
        new.rounds,
        label,
        partials.inertia,
        float(np.sqrt(shift.max())),
        shift.sum(),
        " (converged)" if new.converged else "",
    )
    return new


def update_candidates(
    candidates: Candidates, partials: Sequence[Partials], tol: float, spherical: bool = False
) -> Candidates:
    """One Lloyd update of every candidate from its merged partials (converged ones stay;
    `spherical`: see `lloyd_update`)."""
    several = len(candidates.states) > 1
    return candidates._replace(
        states=tuple(
            lloyd_update(
                state,
                part,
                tol,
                f" (K={len(state.centroids)}, seed {seed})" if several else "",
                spherical,
            )
            for state, part, seed in zip(candidates.states, partials, candidates.seeds)
        )
    )
