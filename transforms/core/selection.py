"""Choose one fit among candidates: the best restart of each K, then K by a criterion.

Runs once, on one worker, on O(candidates x K x D) state and the bounded init
sample: the inertias come from a pass over all rows
(`transforms.beam.rounds.EvaluateCandidates`); the silhouette,
Calinski-Harabasz and Davies-Bouldin scores, which need rows
and labels, from the sample (scikit-learn's `sklearn.metrics`).

A weighted fit's inertias are weighted (the partials'); scikit-learn's scores
take no weights, so they score a weighted resample of the init sample: its
rows drawn with replacement in proportion to their weights (seeded), as many
as the sample holds, which stands for the weighted rows as integer weights
stand for repeated rows.
"""

from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from transforms.core.errors import UserInputError
from transforms.core.lloyd import Candidates, RoundState
from transforms.core.partials import Partials
from transforms.core.seeding import InitSample, sample_rows

# criterion -> True when larger is better
CRITERIA = {"silhouette": True, "calinski_harabasz": True, "davies_bouldin": False}

# The silhouette is O(n^2) in the rows it scores: it scores a bounded subsample.
SILHOUETTE_ROWS = 10_000


class Selection(NamedTuple):
    """The chosen fit and what it was chosen from.

    state:     the chosen candidate's RoundState.
    index:     its position among the candidates.
    seed:      the seed its initialisation drew with (None: given centroids).
    restarts:  per start (lloyd.Candidates.tried: "k", "seed", "sample_inertia",
               "carried"), a carried one with its "rounds", "converged" and,
               when candidates were compared over all rows, "inertia" (against
               its final centroids, all rows); empty when there was a single start.
    sweep:     per K (ascending), for its lowest-inertia restart: {"k",
               "inertia", "silhouette", "calinski_harabasz", "davies_bouldin"}
               (a score is None where it is undefined); None without a sweep.
    criterion: what chose K in a sweep, else None.
    """

    state: RoundState
    index: int
    seed: Optional[int]
    restarts: Tuple[dict, ...] = ()
    sweep: Optional[Tuple[dict, ...]] = None
    criterion: Optional[str] = None


def only_candidate(candidates: Candidates) -> Selection:
    """The Selection of a single candidate (no choice, no extra pass): one start, or the
    best of one K's restarts on the init sample."""
    return Selection(
        state=candidates.states[0],
        index=0,
        seed=candidates.seeds[0],
        restarts=_restarts(candidates),
    )


def _restarts(
    candidates: Candidates, final: Optional[Sequence[Partials]] = None
) -> Tuple[dict, ...]:
    """Selection.restarts: each start tried, with the rounds (and final inertia) of those
    carried; () for a single start."""
    ran = [
        dict(
            k=len(state.centroids),
            seed=seed,
            rounds=state.rounds,
            converged=state.converged,
            **({} if final is None else {"inertia": part.inertia}),
        )
        for state, seed, part in zip(
            candidates.states, candidates.seeds, final or [None] * len(candidates.states)
        )
    ]
    if not candidates.tried:  # Candidates built without the init step
        return tuple(ran) if len(ran) > 1 else ()
    if len(candidates.tried) == 1:
        return ()
    carried = iter(ran)  # both in start order
    return tuple(
        {**start, **(next(carried) if start["carried"] else {})} for start in candidates.tried
    )


def select(
    candidates: Candidates,
    final: Sequence[Partials],
    sample: InitSample,
    criterion: str = "silhouette",
    seed: int = 0,
) -> Selection:
    """Pick the lowest-inertia restart of each K, then the K that `criterion` scores best.

    final:  per candidate, its Partials against its final centroids over all rows.
    sample: float64 [m, D], the standardized init sample the scores are computed on
            (weighted: a Sample, whose weighted resample they score; module doc).
    Ties go to the earlier candidate (the first seed, the smaller K).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion {criterion!r} is not one of {', '.join(CRITERIA)}")
    restarts = _restarts(candidates, final)
    best = {}  # K -> index of its lowest-inertia candidate
    for i, (state, part) in enumerate(zip(candidates.states, final)):
        k = len(state.centroids)
        if k not in best or part.inertia < final[best[k]].inertia:
            best[k] = i
    if len(best) == 1:
        (index,) = best.values()
        return Selection(candidates.states[index], index, candidates.seeds[index], restarts)

    rows = _scored_rows(sample, seed)
    sweep = tuple(
        dict(k=k, inertia=final[i].inertia, **_scores(rows, candidates.states[i].centroids, seed))
        for k, i in sorted(best.items())
    )
    scored = [row for row in sweep if row[criterion] is not None]
    if not scored:
        raise UserInputError(
            f"no K of the sweep {[row['k'] for row in sweep]} has a {criterion} score on the "
            f"init sample: each put the sample in a single cluster (too few distinct rows?)"
        )
    larger_is_better = CRITERIA[criterion]
    chosen = max(scored, key=lambda row: row[criterion] if larger_is_better else -row[criterion])
    index = best[chosen["k"]]
    return Selection(
        candidates.states[index], index, candidates.seeds[index], restarts, sweep, criterion
    )


def _scored_rows(sample: InitSample, seed: int) -> np.ndarray:
    """The rows the scores see: the sample's, or (weighted) its weighted resample."""
    rows, w = sample_rows(sample)
    if w is None:
        return rows
    if not w.sum() > 0:
        raise UserInputError("every row of the init sample has weight 0: nothing to score")
    drawn = np.random.RandomState(seed).choice(len(rows), len(rows), replace=True, p=w / w.sum())
    return rows[np.sort(drawn)]


def _scores(sample: np.ndarray, centroids: np.ndarray, seed: int) -> dict:
    """Silhouette (on at most SILHOUETTE_ROWS rows), Calinski-Harabasz and Davies-Bouldin
    of `sample` float64 [m, D] labelled by its nearest of `centroids` float64 [K, D]."""
    from sklearn.metrics import (
        calinski_harabasz_score,
        davies_bouldin_score,
        pairwise_distances_argmin,
        silhouette_score,
    )

    labels = pairwise_distances_argmin(sample, centroids)
    if not 2 <= len(np.unique(labels)) <= len(sample) - 1:  # where the scores are defined
        return {"silhouette": None, "calinski_harabasz": None, "davies_bouldin": None}
    try:
        silhouette = float(
            silhouette_score(
                sample, labels, sample_size=min(len(sample), SILHOUETTE_ROWS), random_state=seed
            )
        )
    except ValueError:  # the subsample fell in a single cluster
        silhouette = None
    return {
        "silhouette": silhouette,
        "calinski_harabasz": float(calinski_harabasz_score(sample, labels)),
        "davies_bouldin": float(davies_bouldin_score(sample, labels)),
    }
