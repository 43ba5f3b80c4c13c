"""The candidate fits as PTransforms: their starts from the init sample, and the choice among them.

`InitialCandidates` draws the starts (`transforms.core.seeding`) and carries
the best of each K, or all of them; after the rounds, `ChooseCandidate` scores
them in one more pass and picks one (`transforms.core.selection`).
"""

from typing import List, Optional, Tuple

import apache_beam as beam
import numpy as np

from transforms.beam import job_metrics
from transforms.beam.rounds import EvaluateCandidates, StepConfig
from transforms.core.lloyd import Candidates
from transforms.core.parameters import BY_NAME
from transforms.core.seeding import _initial_state
from transforms.core.selection import Selection, only_candidate, select


class InitialCandidates(beam.PTransform):
    """pipeline begin -> one lloyd.Candidates: the initial centroids of the starts carried on.

    starts: [(K, seed)], one per start (seed None for given centroids).
    sample: side input, the standardized init sample, float64 [m, D].
    restarts_on: "all" carries every start to the passes over all rows;
        "sample" carries only the start of each K with the lowest inertia on
        the init sample (ties: the first), as scikit-learn's MiniBatchKMeans
        picks among its n_init starts on its init_size rows.
    spherical: cosine distance (the sample holds unit rows; see core.seeding).
    Each start is its own element, so a runner may initialise them in parallel.
    """

    def __init__(
        self,
        starts: List[Tuple[int, Optional[int]]],
        sample,
        init: str,
        given: Optional[np.ndarray],
        refine_rounds: int,
        tol: float,
        restarts_on: str = "sample",
        spherical: bool = False,
    ):
        super().__init__()
        BY_NAME["restarts_on"].check(restarts_on)
        self._spherical = spherical
        self._starts, self._sample, self._init, self._given = starts, sample, init, given
        self._refine_rounds, self._tol, self._restarts_on = refine_rounds, tol, restarts_on

    @property
    def n_candidates(self) -> int:
        """How many candidates the output holds: one per K, or every start."""
        if self._restarts_on == "sample":
            return len({k for k, _ in self._starts})
        return len(self._starts)

    def expand(self, pbegin):
        return (
            pbegin
            | "Starts" >> beam.Create(list(enumerate(self._starts)))
            | "Centroids"
            >> beam.Map(
                _initial_state,
                sample=self._sample,
                init=self._init,
                given=self._given,
                refine_rounds=self._refine_rounds,
                tol=self._tol,
                spherical=self._spherical,
            )
            # Without a default for an empty input (there is a start at least): the
            # default would be a step and a runner stage of its own.
            | "Gather" >> beam.combiners.ToList().without_defaults()
            | "Carry"
            >> beam.Map(_candidates, starts=self._starts, best_only=self._restarts_on == "sample")
        )


def _candidates(
    initialised: list, starts: List[Tuple[int, Optional[int]]], best_only: bool
) -> Candidates:
    """[(index, RoundState, sample inertia)] in any order -> Candidates in start order: every
    start, or (best_only) the lowest-sample-inertia start of each K (ties: the first)."""
    initialised = sorted(initialised, key=lambda item: item[0])
    job_metrics.record(job_metrics.STARTS, len(initialised))
    job_metrics.record_time(job_metrics.INITIALISED_MS)
    carried = set(range(len(starts)))
    if best_only:
        best = {}  # K -> index of its lowest-sample-inertia start
        for index, _, inertia in initialised:
            k = starts[index][0]
            if k not in best or inertia < initialised[best[k]][2]:
                best[k] = index
        carried = set(best.values())
    tried = tuple(
        {
            "k": starts[index][0],
            "seed": starts[index][1],
            "sample_inertia": inertia,
            "carried": index in carried,
        }
        for index, _, inertia in initialised
    )
    job_metrics.record(job_metrics.CARRIED, len(carried))
    return Candidates(
        states=tuple(state for index, state, _ in initialised if index in carried),
        seeds=tuple(starts[index][1] for index in sorted(carried)),
        tried=tried,
    )


class ChooseCandidate(beam.PTransform):
    """shard paths -> one Selection, given the candidates after their rounds.

    With a single candidate there is nothing to choose and no extra pass; else
    one pass scores every candidate against its final centroids, then `select`.
    candidates: a PCollection of one lloyd.Candidates, of `n_candidates` fits.
    sample: side input, the standardized init sample, float64 [m, D].
    """

    def __init__(
        self, candidates, n_candidates: int, sample, config: StepConfig, criterion: str, seed: int
    ):
        super().__init__()
        self._candidates, self._n, self._sample, self._config = (
            candidates,
            n_candidates,
            sample,
            config,
        )
        self._criterion, self._seed = criterion, seed

    def expand(self, shard_paths):
        if self._n == 1:
            return self._candidates | "OnlyCandidate" >> beam.Map(only_candidate)
        candidates = beam.pvalue.AsSingleton(self._candidates)
        final = shard_paths | "Evaluate" >> EvaluateCandidates(self._candidates, self._config)
        return final | "Select" >> beam.Map(
            _select,
            candidates=candidates,
            sample=self._sample,
            criterion=self._criterion,
            seed=self._seed,
        )


def _select(
    final: tuple, candidates: Candidates, sample: np.ndarray, criterion: str, seed: int
) -> Selection:
    return select(candidates, final, sample, criterion, seed)
