"""Initial centroids from a bounded sample that no sharding or ordering can change.

The sample is the m rows with the smallest 64-bit hash of (row content, seed):
a bottom-m sample. Every runner computes the same one, whatever the shards,
bundles or worker count, because a row's hash depends on nothing but its values
and the seed. k-means++ (scikit-learn's `kmeans_plusplus`) then runs on the
sample's first rows in hash order (`seeding_rows`), and each start's inertia on
the sample can choose among restarts (`InitialCandidates`).
"""
from typing import Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np

from transforms.errors import UserInputError
from transforms.lloyd import Candidates, RoundState

INIT_METHODS = ("k-means++", "random")


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, vectorised over uint64 (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_hashes(x: np.ndarray, seed: int) -> np.ndarray:
    """uint64 [n]: a hash of each row of float64 `x` [n, D] (its exact bits) and `seed`."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    h = _splitmix64(np.full(len(x), seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
    for j in range(bits.shape[1]):
        h = _splitmix64(h ^ bits[:, j])
    return h


class Sample(NamedTuple):
    """A bottom-m sample: hashes uint64 [m'] ascending, rows float64 [m', D]."""

    hashes: np.ndarray
    rows: np.ndarray


def _bottom(hashes: np.ndarray, rows: np.ndarray, m: int) -> Sample:
    """The m smallest (hash, row) pairs in ascending order; equal hashes by row values."""
    if len(hashes) > m:
        cut = np.partition(hashes, m - 1)[m - 1]
        keep = hashes <= cut
        hashes, rows = hashes[keep], rows[keep]
    order = np.argsort(hashes, kind="stable")
    hashes, rows = hashes[order], rows[order]
    if np.any(hashes[1:] == hashes[:-1]):
        # Duplicate rows share a hash: order them by their values too, so that
        # the sample does not depend on the order rows arrived in (rare: sort all).
        order = np.lexsort(tuple(rows.T[::-1]) + (hashes,))
        hashes, rows = hashes[order], rows[order]
    return Sample(hashes[:m], rows[:m])


class _Bottom:
    """BottomSampleFn's accumulator: a bottom-m Sample, and the batches that may still enter it.

    Merged into the sample only once they hold m rows: merging costs a copy
    of the sample (m x D float64), so merging every batch would copy it once
    a batch; this way it is copied about ln(rows / m) times over a pass.
    n_pending counts their rows: once the sample is full a batch keeps few rows,
    so the list grows long, and summing it on every batch would be quadratic.
    """

    def __init__(self, sample: Sample):
        self.sample, self.pending, self.n_pending = sample, [], 0


class BottomSampleFn(beam.CombineFn):
    """Combines (hashes uint64 [n], rows float64 [n, D]) batches into the bottom-m Sample."""

    def __init__(self, m: int, n_features: int):
        self._m, self._d = m, n_features

    def create_accumulator(self) -> _Bottom:
        return _Bottom(Sample(np.zeros(0, np.uint64), np.zeros((0, self._d))))

    def add_input(self, accumulator: _Bottom, element) -> _Bottom:
        hashes, rows = element
        if len(accumulator.sample.hashes) == self._m:
            # Full: only rows that hash below its largest can get in.
            keep = hashes <= accumulator.sample.hashes[-1]
            hashes, rows = hashes[keep], rows[keep]
        if len(hashes):
            accumulator.pending.append((hashes, rows))
            accumulator.n_pending += len(hashes)
        if accumulator.n_pending >= self._m:
            self._settle(accumulator)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_Bottom]) -> _Bottom:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged.pending += [tuple(accumulator.sample)] + accumulator.pending
        return self._settle(merged)

    def compact(self, accumulator: _Bottom) -> _Bottom:
        return self._settle(accumulator)  # before it is encoded: m rows, not up to 2m

    def extract_output(self, accumulator: _Bottom) -> Sample:
        return self._settle(accumulator).sample

    def _settle(self, accumulator: _Bottom) -> _Bottom:
        """Merge the pending batches into the sample."""
        if accumulator.pending:
            parts = [tuple(accumulator.sample)] + accumulator.pending
            accumulator.sample = _bottom(np.concatenate([h for h, _ in parts]),
                                         np.concatenate([r for _, r in parts]), self._m)
            accumulator.pending, accumulator.n_pending = [], 0
        return accumulator


def seeding_rows(n_clusters: int) -> int:
    """Rows of the init sample k-means++ draws from: max(20000, 50 K).

    The sample is in hash order, so its first rows are a uniform subsample, as
    the init_size rows scikit-learn's MiniBatchKMeans seeds on. k-means++
    costs rows x K x its local trials (100k rows, K=64: ~0.3 s against
    ~0.04 s for 20k, on Zen 4), and the Lloyd refinement on the whole sample follows.
    """
    return max(20_000, 50 * n_clusters)


def initial_centroids(sample: np.ndarray, n_clusters: int, init: str,
                      seed: int, given: Optional[np.ndarray] = None,
                      refine_rounds: int = 0, tol: float = 0.0) -> np.ndarray:
    """float64 [K, D] initial centroids from `sample` float64 [m, D] (standardized, hash order).

    init: "k-means++" (scikit-learn's kmeans_plusplus with `seed`, on the
    first `seeding_rows(K)` rows of the sample), "random" (K distinct sample
    rows drawn with `seed`), or "given" (`given` [K, D], used as they are).
    k-means++ and random starts are then refined by up to `refine_rounds`
    Lloyd rounds on the whole sample, in memory (scikit-learn, same `tol`): a
    better start costs the full passes nothing, and the passes that follow
    are still exact Lloyd over all rows.
    """
    if init == "given":
        return np.asarray(given, dtype=np.float64)
    if init == "k-means++":
        from sklearn.cluster import kmeans_plusplus
        from threadpoolctl import threadpool_limits

        # Its distances go to a few candidates at a time: products too small for
        # two BLAS threads, whose hand-offs double its time (20k rows, K=64: 0.08
        # -> 0.18 s a start). OpenBLAS splits a product's output between threads,
        # so one thread gives the same centers, bit for bit.
        with threadpool_limits(limits=1, user_api="blas"):
            centers, _ = kmeans_plusplus(sample[:seeding_rows(n_clusters)], n_clusters,
                                         random_state=seed)
    elif init == "random":
        rows = np.random.RandomState(seed).choice(len(sample), n_clusters, replace=False)
        centers = sample[rows]
    else:
        raise ValueError(f"init={init!r} is not one of {INIT_METHODS} or a centroids file")
    if refine_rounds > 0:
        import warnings

        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            # fewer distinct rows than K: the full passes re-seed the empty clusters
            warnings.simplefilter("ignore", ConvergenceWarning)
            centers = KMeans(n_clusters, init=centers, n_init=1, max_iter=refine_rounds,
                             tol=tol, algorithm="lloyd").fit(sample).cluster_centers_
    return np.asarray(centers, dtype=np.float64)


# Where the restarts of each K compete (KMeans's `restarts_on`).
RESTARTS_ON = ("sample", "all")


def sample_inertia(sample: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances of `sample` float64 [m, D] rows to their nearest of
    `centroids` float64 [K, D]."""
    from sklearn.metrics import pairwise_distances_argmin_min

    _, distances = pairwise_distances_argmin_min(sample, centroids)  # chunked: bounded memory
    return float(np.sum(distances ** 2))


class InitialCandidates(beam.PTransform):
    """pipeline begin -> one lloyd.Candidates: the initial centroids of the starts carried on.

    starts: [(K, seed)], one per start (seed None for given centroids).
    sample: side input, the standardized init sample, float64 [m, D].
    restarts_on: "all" carries every start to the passes over all rows;
        "sample" carries only the start of each K with the lowest inertia on
        the init sample (ties: the first), as scikit-learn's MiniBatchKMeans
        picks among its n_init starts on its init_size rows.
    Each start is its own element, so a runner may initialise them in parallel.
    """

    def __init__(self, starts: List[Tuple[int, Optional[int]]], sample, init: str,
                 given: Optional[np.ndarray], refine_rounds: int, tol: float,
                 restarts_on: str = "sample"):
        super().__init__()
        if restarts_on not in RESTARTS_ON:
            raise ValueError(f"restarts_on must be one of {RESTARTS_ON}, got {restarts_on!r}")
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
            | "Centroids" >> beam.Map(_initial_state, sample=self._sample, init=self._init,
                                      given=self._given, refine_rounds=self._refine_rounds,
                                      tol=self._tol)
            | "Gather" >> beam.combiners.ToList()
            | "Carry" >> beam.Map(_candidates, starts=self._starts,
                                  best_only=self._restarts_on == "sample"))


def _initial_state(start, sample: np.ndarray, init: str, given: Optional[np.ndarray],
                   refine_rounds: int, tol: float):
    """(index, (K, seed)) -> (index, RoundState of that start's initial centroids, their
    inertia on the sample)."""
    index, (k, seed) = start
    if len(sample) < k:
        raise UserInputError(f"--k {k} is larger than the number of valid rows ({len(sample)})")
    centroids = initial_centroids(sample, k, init, seed, given, refine_rounds, tol)
    return index, RoundState(centroids=centroids), sample_inertia(sample, centroids)


def _candidates(initialised: list, starts: List[Tuple[int, Optional[int]]],
                best_only: bool) -> Candidates:
    """[(index, RoundState, sample inertia)] in any order -> Candidates in start order: every
    start, or (best_only) the lowest-sample-inertia start of each K (ties: the first)."""
    initialised = sorted(initialised, key=lambda item: item[0])
    carried = set(range(len(starts)))
    if best_only:
        best = {}  # K -> index of its lowest-sample-inertia start
        for index, _, inertia in initialised:
            k = starts[index][0]
            if k not in best or inertia < initialised[best[k]][2]:
                best[k] = index
        carried = set(best.values())
    tried = tuple({"k": starts[index][0], "seed": starts[index][1], "sample_inertia": inertia,
                   "carried": index in carried} for index, _, inertia in initialised)
    return Candidates(states=tuple(state for index, state, _ in initialised if index in carried),
                      seeds=tuple(starts[index][1] for index in sorted(carried)), tried=tried)
