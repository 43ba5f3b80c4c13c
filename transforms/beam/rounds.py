"""Lloyd rounds over standardized shards, and the final assignment pass, as PTransforms.

All take a PCollection of shard paths (what the shard sink returned) and a
single-element PCollection of state as a side input: `Candidates` for the
rounds (every restart and K fitted together), the chosen `RoundState` for the
final pass. A round is two labelled steps: per-shard partial sums
(TensorFlow, under the strategy), then one combine that merges them and ends
in the NumPy update. Rounds are unrolled: a Beam graph has no loops, and the
state the next round needs is tiny (candidates x K x D).
"""

import functools
from typing import Iterator, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.beam import job_metrics
from transforms.beam.assign import list_column
from transforms.beam.combiners import (
    CandidatePartialsCombineFn,
    ClusterTotalsCombineFn,
    PartialsCombineFn,
    QuantileSketchCombineFn,
)
from transforms.beam.shards import (
    FEATURES_COLUMN,
    WEIGHT_COLUMN,
    get_shard_cache,
    iter_passthrough,
    iter_standardized,
    row_weights,
)
from transforms.core.lloyd import Candidates, RoundState, update_candidates
from transforms.core.partials import Partials, merge
from transforms.core.statistics import (
    TAIL_PROBABILITIES,
    ClusterStats,
    ClusterTotals,
    QuantileSketch,
    add_totals,
    anomaly_threshold,
    cluster_radii,
    normalized_distances,
)
from transforms.step.buffers import rows_per_call
from transforms.step.export import NEAREST_CLUSTER_IDS, NEAREST_DISTANCES
from transforms.step.step import get_step, nearest_centroids


class StepConfig(NamedTuple):
    """What every step DoFn needs to know (picklable, shipped with the DoFn).

    n_features: D.
    batch_size: rows per read of a shard, and per call of the XLA step; a cached
        shard goes to the fused op in larger calls (KMeansStep.rows_per_call).
    cache_mb: bound of the per-process shard cache (0: read the shards every round).
    devices: `--devices` spec for MirroredStrategy (None: all GPUs, else the CPU).
    n_far: re-seeding candidates carried in the partials.
    distance: "euclidean" or "cosine" (the rows and centroids are unit vectors,
        and the step's squared distances become 1 - cos: see `row_distances`).
    weighted: the shards hold each row's weight (`shards.WEIGHT_COLUMN`): the
        partial sums, inertia, radii and cluster weight sums are weighted.
    """

    n_features: int
    batch_size: int = 65536
    cache_mb: int = 1024
    devices: Optional[str] = None
    n_far: int = 16
    distance: str = "euclidean"
    weighted: bool = False

    @property
    def cosine(self) -> bool:
        return self.distance == "cosine"


def row_distances(sq_dist: np.ndarray, cosine: bool) -> np.ndarray:
    """The step's squared distances float32 [n] -> the distances reported, float32 [n]:
    Euclidean, or for unit rows and centroids 1 - cos = |x - c|^2 / 2."""
    return sq_dist / np.float32(2) if cosine else np.sqrt(sq_dist)


class _PartialSumsFn(beam.DoFn):
    """shard path -> a tuple of Partials, one per candidate, against its current centroids.

    Only the candidates still moving are scored (unless `always`, the
    evaluation pass): a converged state ignores its partials, so it gets zeros.
    The step compiles once per number of scored candidates, a one-off cost
    that the narrower passes repay at scale, where a round's cost grows with
    the candidates it scores (bench/RESULTS.md, 'The cost of a round'). Once all
    have converged, the shard is not even read.
    """

    def __init__(self, config: StepConfig, always: bool = False):
        self._config, self._always = config, always

    def setup(self):
        # Process-wide: every round's DoFn shares one strategy, one compiled step, one cache.
        self._step = get_step(self._config.devices, self._config.n_far)
        self._cache = get_shard_cache(self._config.cache_mb)

    def process(self, path: str, candidates: Candidates) -> Iterator[Tuple[Partials, ...]]:
        parts = self.partials(path, candidates)
        if parts is not None:
            yield parts

    def partials(self, path: str, candidates: Candidates) -> Optional[tuple]:
        """The shard's tuple of Partials, one per candidate (None for an empty shard).

        With all candidates converged: zeros, one a shard, which keep the
        round's combine non-empty.
        """
        cfg = self._config
        scored = [i for i, s in enumerate(candidates.states) if self._always or not s.converged]
        parts = [
            Partials.zeros(len(s.centroids), cfg.n_features, cfg.weighted)
            for s in candidates.states
        ]
        if not scored:
            return tuple(parts)
        centroids = [candidates.states[i].centroids.astype(np.float32) for i in scored]
        # A read goes in batch_size chunks (fewer rows if the call's temporaries
        # need it); a cached shard in as few calls as the step allows.
        read_rows = rows_per_call(cfg.batch_size, centroids)
        cached_rows = self._step.rows_per_call(cfg.batch_size, centroids)
        per_batch = [
            [
                Partials.from_batch(x, result, cfg.cosine, w)
                for result in self._step.groups(x, centroids, per_row=False, weights=w)
            ]
            for x, w in _with_weights(
                self._cache.batches(
                    path, cfg.n_features, read_rows, cached_rows, weighted=cfg.weighted
                ),
                cfg.weighted,
            )
        ]
        if not per_batch:
            return None
        for i, batches in zip(scored, zip(*per_batch)):
            parts[i] = merge(batches, cfg.n_far)
        return tuple(parts)


def _with_weights(batches: Iterator, weighted: bool) -> Iterator[tuple]:
    """`ShardCache.batches`' batches as (rows, weights float32 [n] or None) pairs."""
    return batches if weighted else ((x, None) for x in batches)


class ShardPartials(NamedTuple):
    """One shard's partials (a tuple of Partials, one per candidate) and the
    Candidates they were scored against."""

    candidates: Candidates
    partials: tuple


class _RoundPartialsFn(_PartialSumsFn):
    """(round, Candidates) -> (round + 1, ShardPartials) for one shard path.

    The partials travel with the state they were computed against, so the
    round's combine can end in the update itself (see `LloydUpdateFn`).
    """

    def process(
        self, path: str, keyed_candidates: Tuple[int, Candidates]
    ) -> Iterator[Tuple[int, ShardPartials]]:
        round_, candidates = keyed_candidates
        parts = self.partials(path, candidates)
        if parts is not None:
            yield round_ + 1, ShardPartials(candidates, parts)


@beam.typehints.with_input_types(ShardPartials)
@beam.typehints.with_output_types(Candidates)
class LloydUpdateFn(beam.CombineFn):
    """ShardPartials of one round -> the next Candidates: merge, then the Lloyd update.

    Folding the update into the combine's output saves a step a round; with
    rounds unrolled up to --max_rounds, each step costs graph construction,
    translation and a runner stage even in the rounds that only pass the
    converged state through (bench/RESULTS.md, 'Rounds (--max_rounds)').
    Every element carries the same Candidates (the round's side input); the
    accumulator keeps one. The partial sums are as large as the centroids
    (K x D per candidate), so the state at most doubles what a round sends
    through the shuffle.
    """

    def __init__(self, n_far: int, tol: float, spherical: bool = False):
        self._merge, self._tol = CandidatePartialsCombineFn(n_far), tol
        self._spherical = spherical

    def create_accumulator(self) -> Optional[ShardPartials]:
        return None

    def add_input(self, accumulator, element: ShardPartials) -> ShardPartials:
        return self.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators) -> Optional[ShardPartials]:
        accumulators = [a for a in accumulators if a is not None]
        if not accumulators:
            return None
        return ShardPartials(
            accumulators[0].candidates,
            self._merge.merge_accumulators([a.partials for a in accumulators]),
        )

    def extract_output(self, accumulator: ShardPartials) -> Candidates:
        updated = update_candidates(
            accumulator.candidates, accumulator.partials, self._tol, self._spherical
        )
        _record_round(accumulator.candidates, updated, accumulator.partials)
        return updated


def _record_round(before: Candidates, after: Candidates, partials: tuple) -> None:
    """The round's metrics (job_metrics), for a driver to follow the fit: of the candidates
    this round updated, the lowest inertia and the largest total squared shift (the
    convergence test's), and how many still move. Nothing in a round that only passes
    a converged state on."""
    moved = [i for i, state in enumerate(before.states) if not state.converged]
    if not moved:
        return
    round_ = after.states[moved[0]].rounds
    shifts = [
        float(np.sum((after.states[i].centroids - before.states[i].centroids) ** 2)) for i in moved
    ]
    name = functools.partial(job_metrics.round_name, round_)
    job_metrics.record_float(name("inertia"), min(partials[i].inertia for i in moved))
    job_metrics.record_float(name("shift"), max(shifts))
    job_metrics.record(name("moving"), sum(not s.converged for s in after.states))
    job_metrics.record_time(name("ended_ms"))


class LloydRound(beam.PTransform):
    """shard paths -> (round + 1, next Candidates), given (round, Candidates), a PCollection of one.

    Two steps: per-shard partial sums (TensorFlow, under the strategy), then one
    combine whose output is the updated state. The round number is the
    combine's only key: what crosses the shuffle is one pre-combined
    accumulator per bundle, as in CombineGlobally, whose key-with-None and
    unkey steps this saves.
    """

    def __init__(self, keyed_candidates, config: StepConfig, tol: float):
        super().__init__()
        self._candidates, self._config, self._tol = keyed_candidates, config, tol

    def expand(self, shard_paths):
        return (
            shard_paths
            | "PartialSums"
            >> beam.ParDo(_RoundPartialsFn(self._config), beam.pvalue.AsSingleton(self._candidates))
            | "MergeAndUpdate"
            >> beam.CombinePerKey(LloydUpdateFn(self._config.n_far, self._tol, self._config.cosine))
        )


class LloydRounds(beam.PTransform):
    """shard paths -> the Candidates after up to `max_rounds` Lloyd updates.

    Once every candidate has converged, the remaining rounds pass the state
    through without reading the shards.
    """

    def __init__(self, initial, config: StepConfig, max_rounds: int, tol: float):
        super().__init__()
        self._initial, self._config = initial, config
        self._max_rounds, self._tol = max_rounds, tol

    def expand(self, shard_paths):
        keyed = self._initial | "Round000" >> beam.WithKeys(0)
        for r in range(1, self._max_rounds + 1):
            keyed = shard_paths | f"Round{r:03d}" >> LloydRound(keyed, self._config, self._tol)
        return keyed | "Candidates" >> beam.Values()


class EvaluateCandidates(beam.PTransform):
    """shard paths -> a tuple of Partials: every candidate against its final centroids.

    One more pass, run only when there is a choice to make: the inertia a
    round reports is against the centroids before its update, and the
    candidates are compared on their final ones.
    """

    def __init__(self, candidates, config: StepConfig):
        super().__init__()
        self._candidates, self._config = candidates, config

    def expand(self, shard_paths):
        return (
            shard_paths
            | "PartialSums"
            >> beam.ParDo(
                _PartialSumsFn(self._config, always=True),
                candidates=beam.pvalue.AsSingleton(self._candidates),
            )
            | "MergePartials"
            >> beam.CombineGlobally(
                CandidatePartialsCombineFn(self._config.n_far)
            ).without_defaults()
        )


class _ClusterTotalsFn(beam.DoFn):
    """shard path -> the shard's ClusterTotals against the final centroids (a pass
    before the assignments: a row's normalized distance needs every cluster's radius)."""

    def __init__(self, config: StepConfig):
        self._config = config

    def setup(self):
        self._step = get_step(self._config.devices, self._config.n_far)
        self._cache = get_shard_cache(self._config.cache_mb)

    def process(self, path: str, state: RoundState) -> Iterator[ClusterTotals]:
        cfg = self._config
        centroids = state.centroids.astype(np.float32)
        read_rows = rows_per_call(cfg.batch_size, [centroids])
        cached_rows = self._step.rows_per_call(cfg.batch_size, [centroids])
        totals = [
            ClusterTotals.of_rows(result.labels, result.sq_dist, len(centroids), cfg.cosine, w)
            for result, w in (
                (self._step(x, centroids), w)
                for x, w in _with_weights(
                    self._cache.batches(
                        path, cfg.n_features, read_rows, cached_rows, weighted=cfg.weighted
                    ),
                    cfg.weighted,
                )
            )
        ]
        if totals:
            yield add_totals(totals)


class _SketchShardFn(beam.DoFn):
    """shard path -> a QuantileSketch of its rows' normalized distances (the pass before
    the assignments when they flag anomalies: the threshold needs every row's)."""

    def __init__(self, config: StepConfig):
        self._config = config

    def setup(self):
        self._step = get_step(self._config.devices, self._config.n_far)
        self._cache = get_shard_cache(self._config.cache_mb)

    def process(self, path: str, state: RoundState, radii: np.ndarray) -> Iterator[QuantileSketch]:
        cfg = self._config
        centroids = state.centroids.astype(np.float32)
        read_rows = rows_per_call(cfg.batch_size, [centroids])
        cached_rows = self._step.rows_per_call(cfg.batch_size, [centroids])
        sketch = QuantileSketch()
        for x in self._cache.batches(path, cfg.n_features, read_rows, cached_rows):
            result = self._step(x, centroids)
            distance = row_distances(result.sq_dist, cfg.cosine)
            sketch.update(normalized_distances(distance, result.labels, radii))
        yield sketch


class _AssignShardFn(beam.DoFn):
    """shard path -> record batches of its passthrough columns + cluster_id + distance
    + normalized_distance (+ merged_cluster_id when the state holds a merge map, +
    is_anomaly given a threshold of the normalized distance).

    With `top_n` > 0, also nearest_cluster_ids (list<int64>) and nearest_distances
    (list<float32>, in the units of distance): each row's top_n nearest centroids.

    Also emits, tagged 'partials', the shard's Partials against the final
    centroids (cluster sizes and the final inertia), and without a threshold,
    tagged 'sketch', a QuantileSketch of its rows' normalized distances.
    """

    PARTIALS, SKETCH = "partials", "sketch"

    def __init__(self, config: StepConfig, top_n: int = 0):
        self._config, self._top_n = config, top_n

    def setup(self):
        self._step = get_step(self._config.devices, self._config.n_far)
        self._cache = get_shard_cache(self._config.cache_mb)

    def process(
        self,
        path: str,
        state: RoundState,
        radii: np.ndarray,
        threshold: Optional[float] = None,
    ) -> Iterator[pa.RecordBatch]:
        cfg = self._config
        centroids = state.centroids.astype(np.float32)
        parts, sketch = [], QuantileSketch()
        rows = rows_per_call(cfg.batch_size, [centroids])
        for batch, x in self._rows(path, rows):
            w = row_weights(batch) if cfg.weighted else None
            result = self._step(x, centroids, weights=w)
            parts.append(Partials.from_batch(x, result, cfg.cosine, w))
            distance = row_distances(result.sq_dist, cfg.cosine)
            normalized = normalized_distances(distance, result.labels, radii)
            job_metrics.count(job_metrics.ROWS_ASSIGNED, len(x))
            # (The weights are the user's weight column's values, a passthrough column
            # of their own when the assignments copy it.)
            keep = [n for n in batch.schema.names if n not in (FEATURES_COLUMN, WEIGHT_COLUMN)]
            columns = [batch.column(name) for name in keep] + [
                pa.array(result.labels),
                pa.array(distance),
                pa.array(normalized),
            ]
            names = keep + ["cluster_id", "distance", "normalized_distance"]
            if state.merge_map is not None:
                columns.append(pa.array(state.merge_map[result.labels]))
                names.append("merged_cluster_id")
            if threshold is None:
                sketch.update(normalized)
            else:
                columns.append(pa.array(normalized > np.float32(threshold)))
                names.append("is_anomaly")
            if self._top_n:
                ids, sq_dist = nearest_centroids(x, centroids, self._top_n)
                columns += [list_column(ids), list_column(row_distances(sq_dist, cfg.cosine))]
                names += [NEAREST_CLUSTER_IDS, NEAREST_DISTANCES]
            yield pa.RecordBatch.from_arrays(columns, names=names)
        if parts:
            yield beam.pvalue.TaggedOutput(self.PARTIALS, merge(parts, cfg.n_far))
            if threshold is None:
                yield beam.pvalue.TaggedOutput(self.SKETCH, sketch)

    def _rows(self, path: str, rows: int) -> Iterator[Tuple[pa.RecordBatch, np.ndarray]]:
        """(passthrough columns, standardized float32 rows) of a shard, in batches.

        On a cache hit only the passthrough columns are read: the rounds left
        the standardized features in the cache (the same values a read gives).
        """
        cached = self._cache.get(path)
        if cached is None:
            yield from iter_standardized(path, self._config.n_features, rows)
            return
        start = 0
        for batch in iter_passthrough(path, rows):
            yield batch, cached[start : start + batch.num_rows]
            start += batch.num_rows


class AssignShards(beam.PTransform):
    """shard paths -> {'assignments': record batches, 'partials': one merged Partials,
    'statistics': one ClusterStats}, against the final state (a PCollection of one).

    A pass for the clusters' radii, then the assignments with each row's normalized
    distance, whose distribution a mergeable sketch summarizes. With a
    `contamination`, the sketch has its own pass before the assignments, which then
    flag the rows above the threshold it gives (is_anomaly). With `top_n` > 0 the
    assignments hold each row's top_n nearest centroids too (`_AssignShardFn`).
    """

    def __init__(
        self,
        final_state,
        config: StepConfig,
        contamination: Optional[float] = None,
        top_n: int = 0,
    ):
        super().__init__()
        self._final_state, self._config = final_state, config
        self._contamination, self._top_n = contamination, top_n

    def expand(self, shard_paths):
        cfg = self._config
        state = beam.pvalue.AsSingleton(self._final_state)
        totals = (
            shard_paths
            | "ClusterTotals" >> beam.ParDo(_ClusterTotalsFn(cfg), state=state)
            | "SumTotals" >> beam.CombineGlobally(ClusterTotalsCombineFn()).without_defaults()
        )
        radii = totals | "Radii" >> beam.Map(cluster_radii, cosine=cfg.cosine)
        radii_side = beam.pvalue.AsSingleton(radii)
        threshold = {}
        if self._contamination is not None:
            sketches = shard_paths | "Sketch" >> beam.ParDo(
                _SketchShardFn(cfg), state=state, radii=radii_side
            )
            threshold["threshold"] = beam.pvalue.AsSingleton(
                sketches
                | "MergeSketchesFirst"
                >> beam.CombineGlobally(QuantileSketchCombineFn()).without_defaults()
                | "Threshold" >> beam.Map(_threshold_of, contamination=self._contamination)
            )
        outputs = shard_paths | "Assign" >> beam.ParDo(
            _AssignShardFn(cfg, self._top_n), state=state, radii=radii_side, **threshold
        ).with_outputs(_AssignShardFn.PARTIALS, _AssignShardFn.SKETCH, main="assignments")
        partials = (
            outputs[_AssignShardFn.PARTIALS]
            | "MergePartials"
            >> beam.CombineGlobally(PartialsCombineFn(cfg.n_far)).without_defaults()
        )
        if self._contamination is None:
            sketches = outputs[_AssignShardFn.SKETCH]
        statistics = (
            sketches
            | "MergeSketches" >> beam.CombineGlobally(QuantileSketchCombineFn()).without_defaults()
            | "Statistics"
            >> beam.Map(
                _cluster_stats,
                totals=beam.pvalue.AsSingleton(totals),
                radii=beam.pvalue.AsSingleton(radii),
            )
        )
        return {"assignments": outputs.assignments, "partials": partials, "statistics": statistics}


def _threshold_of(sketch: QuantileSketch, contamination: float) -> float:
    """The anomaly threshold, read from the table the model keeps (the same value)."""
    quantiles = sketch.tail_quantiles(TAIL_PROBABILITIES)
    return anomaly_threshold(TAIL_PROBABILITIES, quantiles, contamination)


def _cluster_stats(sketch: QuantileSketch, totals: ClusterTotals, radii: np.ndarray):
    return ClusterStats(
        sizes=totals.counts,
        radii=radii,
        tail=TAIL_PROBABILITIES.copy(),
        tail_quantiles=sketch.tail_quantiles(TAIL_PROBABILITIES),
    )
