"""Lloyd rounds over standardized shards, and the final assignment pass, as PTransforms.

Both take a PCollection of shard paths (what the Parquet sink returned) and a
single-element PCollection of `RoundState` as a side input. A round is three
labelled steps: per-shard partial sums (TensorFlow, under the strategy), one
global combine, and the NumPy update (fused with the combine). Rounds are
unrolled: a Beam graph has no loops, and the state the next round needs is
tiny (K x D).
"""
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.kmeans_step import get_step
from transforms.lloyd import RoundState, lloyd_update
from transforms.partials import Partials, PartialsCombineFn, merge
from transforms.shards import FEATURES_COLUMN, get_shard_cache, iter_standardized


class StepConfig(NamedTuple):
    """What every step DoFn needs to know (picklable, shipped with the DoFn).

    n_clusters, n_features: K and D.
    batch_size: rows per TensorFlow call.
    cache_mb: bound of the per-process shard cache (0: read the shards every round).
    devices: `--devices` spec for MirroredStrategy (None: all GPUs, else the CPU).
    n_far: re-seeding candidates carried in the partials.
    """

    n_clusters: int
    n_features: int
    batch_size: int = 65536
    cache_mb: int = 1024
    devices: Optional[str] = None
    n_far: int = 16


class _PartialSumsFn(beam.DoFn):
    """shard path -> Partials of its rows against the round's centroids (zeros once converged)."""

    def __init__(self, config: StepConfig):
        self._config = config

    def setup(self):
        # Process-wide: every round's DoFn shares one strategy, one compiled step, one cache.
        self._step = get_step(self._config.devices, self._config.n_far)
        self._cache = get_shard_cache(self._config.cache_mb)

    def process(self, path: str, state: RoundState):
        cfg = self._config
        if state.converged:
            # Nothing to compute; one empty partial keeps the round's combine
            # non-empty, so it needs no default-value step.
            yield Partials.zeros(cfg.n_clusters, cfg.n_features)
            return
        centroids = state.centroids.astype(np.float32)
        parts = [Partials.from_batch(x, self._step(x, centroids))
                 for x in self._cache.batches(path, cfg.n_features, cfg.batch_size)]
        if parts:
            yield merge(parts, cfg.n_far)


class LloydRound(beam.PTransform):
    """shard paths -> next RoundState, given this round's state (a PCollection of one)."""

    def __init__(self, state, config: StepConfig, tol: float):
        super().__init__()
        self._state, self._config, self._tol = state, config, tol

    def expand(self, shard_paths):
        cfg = self._config
        state = beam.pvalue.AsSingleton(self._state)
        # The update reads the merged partials as its main input, so the runner
        # fuses it with the combine's last step: two stages a round, not three.
        return (
            shard_paths
            | "PartialSums" >> beam.ParDo(_PartialSumsFn(cfg), state=state)
            | "MergePartials" >> beam.CombineGlobally(
                PartialsCombineFn(cfg.n_clusters, cfg.n_features, cfg.n_far)).without_defaults()
            | "Update" >> beam.Map(_update, state=state, tol=self._tol))


def _update(partials: Partials, state: RoundState, tol: float) -> RoundState:
    return lloyd_update(state, partials, tol)


class LloydRounds(beam.PTransform):
    """shard paths -> the RoundState after up to `max_rounds` Lloyd updates.

    Once the state has converged, the remaining rounds pass it through without
    reading the shards.
    """

    def __init__(self, initial_state, config: StepConfig, max_rounds: int, tol: float):
        super().__init__()
        self._initial_state, self._config = initial_state, config
        self._max_rounds, self._tol = max_rounds, tol

    def expand(self, shard_paths):
        state = self._initial_state
        for r in range(1, self._max_rounds + 1):
            state = shard_paths | f"Round{r:03d}" >> LloydRound(state, self._config, self._tol)
        return state


class _AssignShardFn(beam.DoFn):
    """shard path -> record batches of its passthrough columns + cluster_id + distance
    (+ merged_cluster_id when the state holds a merge map).

    Also emits, tagged 'partials', the shard's Partials against the final
    centroids (cluster sizes and the final inertia).
    """

    PARTIALS = "partials"

    def __init__(self, config: StepConfig):
        self._config = config

    def setup(self):
        self._step = get_step(self._config.devices, self._config.n_far)

    def process(self, path: str, state: RoundState):
        cfg = self._config
        centroids = state.centroids.astype(np.float32)
        parts = []
        for batch, x in iter_standardized(path, cfg.n_features, cfg.batch_size):
            result = self._step(x, centroids)
            parts.append(Partials.from_batch(x, result))
            keep = [name for name in batch.schema.names if name != FEATURES_COLUMN]
            columns = [batch.column(name) for name in keep] + [
                pa.array(result.labels), pa.array(np.sqrt(result.sq_dist))]
            names = keep + ["cluster_id", "distance"]
            if state.merge_map is not None:
                columns.append(pa.array(state.merge_map[result.labels]))
                names.append("merged_cluster_id")
            yield pa.RecordBatch.from_arrays(columns, names=names)
        if parts:
            yield beam.pvalue.TaggedOutput(self.PARTIALS, merge(parts, cfg.n_far))


class AssignShards(beam.PTransform):
    """shard paths -> {'assignments': record batches, 'partials': one merged Partials}."""

    def __init__(self, final_state, config: StepConfig):
        super().__init__()
        self._final_state, self._config = final_state, config

    def expand(self, shard_paths):
        cfg = self._config
        outputs = shard_paths | "Assign" >> beam.ParDo(
            _AssignShardFn(cfg), state=beam.pvalue.AsSingleton(self._final_state)
        ).with_outputs(_AssignShardFn.PARTIALS, main="assignments")
        partials = outputs[_AssignShardFn.PARTIALS] | "MergePartials" >> beam.CombineGlobally(
            PartialsCombineFn(cfg.n_clusters, cfg.n_features, cfg.n_far))
        return {"assignments": outputs.assignments, "partials": partials}
