"""The `KMeans` PTransform: rows in, a fitted model out (tf.Transform + Lloyd rounds + SavedModel).

    fitted = rows | KMeans(n_clusters=8, features=["a", "b"], output_dir="gs://b/model")

Steps: every row is written once to Arrow shards in a work directory while
tf.Transform analyses the global mean and variance (OUTPUT_DIR/transform_fn/)
and a bottom-m hash sample is drawn, all in the pass that reads the rows; the
sample gives the initial centroids of every start (each K of a sweep x each
restart), and by default the best start of each K on the sample is the
candidate carried on; up to `max_iter` Lloyd rounds run over the shards for
all candidates at once, the shards standardized with the saved transform as they
are loaded; with several candidates one more pass picks one; a final pass
assigns every row; the SavedModel is written to OUTPUT_DIR/model/1/ (TF Serving's
layout: version 1 under the model base path OUTPUT_DIR/model).

Why the shards hold the rows as read rather than standardized: standardizing
needs the analysis's result, so a standardize step must wait for the whole
analysis, and a runner that cannot stream between stages (the DirectRunner)
keeps every row in memory meanwhile. Written raw, the rows leave the read
stage as they arrive; the transform is applied later, once per shard load.
"""

import logging
import uuid
from typing import List, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems

from transforms.beam.candidates import ChooseCandidate, InitialCandidates
from transforms.beam.combiners import BottomSampleFn
from transforms.beam.elements import batch_elements, split_kinds
from transforms.beam.model_paths import MODEL_BASE
from transforms.beam.rounds import AssignShards, LloydRounds, StepConfig
from transforms.beam.shards import (
    FEATURES_COLUMN,
    WriteShards,
    default_cache_mb,
    features_to_matrix,
    matrix_to_features,
    raw_shard_schema,
)
from transforms.core.errors import UserInputError
from transforms.core.hierarchy import merge_clusters
from transforms.core.lloyd import RoundState
from transforms.core.sampling import row_hashes
from transforms.core.seeding import RESTARTS_ON
from transforms.core.selection import CRITERIA
from transforms.step.export import MODEL_VERSION, export_model
from transforms.step.preprocessing import Standardizer, preprocessing_fn, tensor_adapter_config

# Restarts by default: one start can end in a local optimum far above the best
# of a few, and 4 take most of what more restarts gain for a small share of a
# fit's time, while 8 add little for a larger share (bench/RESULTS.md,
# 'Restarts (--n_init)'). Competing on the init sample, they cost only their init.
DEFAULT_N_INIT = 4

# Lloyd rounds over all rows, at most. Every round is unrolled in the graph and
# costs graph construction and runner stages even after convergence (more on a
# cluster than locally), so every fit pays for the cap. The passes start from a
# start refined on the init sample: on overlapping clusters round 30 is already
# negligibly above the converged inertia, and on structureless data, where no
# cap converges, a higher one gains little (bench/RESULTS.md, 'Rounds (--max_rounds)').
DEFAULT_MAX_ITER = 30


def resolve_n_init(n_init: Optional[int], given: bool) -> int:
    """`n_init`, or its default: DEFAULT_N_INIT random starts, 1 for given centroids
    (one start, as scikit-learn does for explicit centers)."""
    if n_init is not None:
        return n_init
    return 1 if given else DEFAULT_N_INIT


class KMeans(beam.PTransform):
    """Fit K-Means on a PCollection of rows; returns a dict of PCollections.

    Input elements, any mix of:
      - dict rows {feature: number, ...} (other keys named in `passthrough` are kept);
      - NumPy float arrays [n, D], columns in `features` order;
      - Arrow record batches with `FEATURES_COLUMN` (list<float64>, D values a
        row) and the `passthrough` columns (what pipeline's readers produce).
    Values must be finite numbers: validate first (a NaN raises).

    Output:
      state:       one RoundState of the chosen fit (centroids float64 [K, D]
                   standardized, rounds, converged, inertia_history).
      selection:   one core.selection.Selection: the chosen fit and, with restarts or a
                   sweep, the inertia of every candidate and the scores of every K.
      final:       one Partials of the final pass against the final centroids
                   (counts = cluster sizes, inertia).
      assignments: record batches: passthrough columns + cluster_id (int64) +
                   distance (float32, Euclidean, standardized space).
      model:       one element, the model's version directory (OUTPUT_DIR/model/1),
                   once the SavedModel is written.
      sample:      one core.sampling.Sample: the bottom-m rows (raw, float64 [m, D]) the
                   initialisation used; bounded by init_sample_size.
      done:        one element, the model's version directory, once everything `KMeans`
                   writes is written and its work directory is removed (unless
                   kept): what a step that publishes OUTPUT_DIR waits for.
    OUTPUT_DIR/transform_fn/ and OUTPUT_DIR/model/1/ are written.

    Arguments follow scikit-learn's KMeans where they can: n_clusters, max_iter,
    tol (total squared centroid shift in standardized space), init ("k-means++",
    "random" or an array [K, D] in standardized space), random_state, n_init.
    n_clusters may be a list of Ks: a sweep, every K fitted in the same passes,
    one chosen by `select` ("silhouette", "calinski_harabasz" or
    "davies_bouldin", on the bounded init sample). n_init restarts of each K
    (default DEFAULT_N_INIT for k-means++ and random starts, 1 for given
    centroids) compete where `restarts_on` says: "sample" (default) draws and
    refines each on the init sample and carries the lowest sample inertia of
    each K to the passes over all rows, as scikit-learn's MiniBatchKMeans
    does; "all" runs every restart in the same passes over all rows and the
    lowest final inertia wins. Restart r draws
    its k-means++ start with seed `init_seed + r` (init_seed defaults to
    random_state, which also seeds the init sample's hash).
    init_refine_rounds: Lloyd rounds on the init sample, in memory, before the
    first pass over all rows (k-means++ and random starts only; 0: none).
    merge_to: merge the fitted clusters into this many groups by size-weighted
    Ward linkage (transforms.core.hierarchy); the state gets merge_map and linkage,
    the assignments and the SavedModel a merged_cluster_id.
    """

    def __init__(
        self,
        n_clusters: Union[int, Sequence[int]],
        features: List[str],
        output_dir: str,
        *,
        max_iter: int = DEFAULT_MAX_ITER,
        tol: float = 1e-4,
        init="k-means++",
        random_state: int = 0,
        n_init: Optional[int] = None,
        init_seed: Optional[int] = None,
        restarts_on: str = "sample",
        select: str = "silhouette",
        init_sample_size: int = 100_000,
        init_refine_rounds: int = 100,
        batch_size: int = 65536,
        cache_mb: Optional[int] = None,
        devices: Optional[str] = None,
        passthrough: Optional[pa.Schema] = None,
        work_dir: Optional[str] = None,
        keep_standardized: bool = False,
        merge_to: Optional[int] = None,
    ):
        super().__init__()
        ks = (n_clusters,) if np.ndim(n_clusters) == 0 else tuple(n_clusters)
        self.ks = _check_ks(ks)
        n_init = resolve_n_init(n_init, given=not isinstance(init, str))
        if isinstance(init, str):
            self._init, self._given = init, None
        else:
            self._init, self._given = "given", np.asarray(init, np.float64)
            if len(self.ks) > 1 or n_init > 1:
                raise UserInputError(
                    f"given initial centroids are one start: they take a single "
                    f"K and n_init=1, got n_clusters={list(self.ks)}, "
                    f"n_init={n_init}"
                )
            if self._given.shape != (self.ks[0], len(features)):
                raise UserInputError(
                    f"init has shape {self._given.shape}, expected {(self.ks[0], len(features))}"
                )
        if n_init < 1:
            raise UserInputError(f"n_init must be at least 1, got {n_init}")
        if restarts_on not in RESTARTS_ON:
            raise UserInputError(
                f"restarts_on must be one of {', '.join(RESTARTS_ON)}, got {restarts_on!r}"
            )
        if select not in CRITERIA:
            raise UserInputError(f"select must be one of {', '.join(CRITERIA)}, got {select!r}")
        self.features, self.output_dir = list(features), output_dir
        self.max_iter, self.tol, self.random_state = max_iter, tol, random_state
        self.n_init, self.restarts_on, self.select = n_init, restarts_on, select
        # Restart r of every K draws with seed init_seed + r: restart r alone is
        # the fit with n_init=1 and init_seed + r (the sample's hash keeps random_state).
        first = random_state if init_seed is None else init_seed
        self.starts = [
            (k, None if self._given is not None else (first + r) % 2**32)
            for k in self.ks
            for r in range(n_init)
        ]
        self.init_sample_size = max(init_sample_size, max(self.ks))
        self.init_refine_rounds = init_refine_rounds
        self.passthrough = passthrough if passthrough is not None else pa.schema([])
        self.work_dir = work_dir or FileSystems.join(output_dir, "_work")
        self.keep_standardized = keep_standardized
        # Names this fit's shards: a process-wide cache keyed by shard path or
        # transform must not serve a previous fit into the same directory.
        self._run = uuid.uuid4().hex[:12]
        if merge_to is not None and not 1 <= merge_to <= min(self.ks):
            raise UserInputError(
                f"merge_to must be in 1..{min(self.ks)} (the smallest K), got {merge_to}"
            )
        self.merge_to = merge_to
        self.step = StepConfig(
            n_features=len(features),
            batch_size=batch_size,
            cache_mb=default_cache_mb() if cache_mb is None else cache_mb,
            devices=devices,
        )

    @property
    def transform_dir(self) -> str:
        return FileSystems.join(self.output_dir, "transform_fn")

    @property
    def model_dir(self) -> str:
        """The SavedModel's version directory, OUTPUT_DIR/model/1."""
        return FileSystems.join(self.output_dir, MODEL_BASE, str(MODEL_VERSION))

    def expand(self, rows):
        d = len(self.features)
        batches = (
            rows
            | "Batch" >> batch_elements(self.step.batch_size)
            | "ToRecordBatches"
            >> beam.FlatMap(
                _to_record_batches, features=self.features, passthrough=self.passthrough
            )
        )

        with tft_beam.Context(temp_dir=FileSystems.join(self.work_dir, "tft")):
            transform_fn = (
                batches | "FeaturesOnly" >> beam.Map(lambda b: b.select([FEATURES_COLUMN])),
                tensor_adapter_config(
                    pa.schema([pa.field(FEATURES_COLUMN, pa.list_(pa.float64()))]),
                    FEATURES_COLUMN,
                    d,
                ),
            ) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
            written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
                self.transform_dir
            )
        transform_ready = beam.pvalue.AsIter(written)

        # In the read stage, next to the analysis and the sample: nothing here
        # waits for the analysis, so no stage holds the rows (see the module doc).
        shard_schema = raw_shard_schema(self.passthrough, self.transform_dir, self._run)
        shard_paths = (
            batches
            | "ToTables" >> beam.Map(_to_table, schema=shard_schema)
            | "Materialize"
            >> WriteShards(
                FileSystems.join(self.work_dir, "shards", f"rows-{self._run}"), shard_schema
            )
            | "SpreadShards" >> beam.Reshuffle()
        )

        sample = (
            batches
            | "HashRows" >> beam.Map(_hashed_rows, n_features=d, seed=self.random_state)
            | "BottomSample" >> beam.CombineGlobally(BottomSampleFn(self.init_sample_size, d))
        )
        standardized_sample = beam.pvalue.AsSingleton(
            sample
            | "StandardizeSample"
            >> beam.Map(
                _standardized_sample, transform_dir=self.transform_dir, ready=transform_ready
            )
        )
        init = InitialCandidates(
            self.starts,
            standardized_sample,
            self._init,
            self._given,
            self.init_refine_rounds,
            self.tol,
            self.restarts_on,
        )
        initial = rows.pipeline | "InitCentroids" >> init
        candidates = shard_paths | "Lloyd" >> LloydRounds(
            initial, self.step, self.max_iter, self.tol
        )
        selection = shard_paths | "Choose" >> ChooseCandidate(
            candidates,
            init.n_candidates,
            standardized_sample,
            self.step,
            self.select,
            self.random_state,
        )
        state = selection | "Chosen" >> beam.Map(lambda chosen: chosen.state)
        if self.merge_to is not None:
            state = state | "WardMerge" >> beam.Map(merge_clusters, n_groups=self.merge_to)
        assigned = shard_paths | "FinalAssign" >> AssignShards(state, self.step)
        model = state | "ExportModel" >> beam.Map(
            _export,
            model_dir=self.model_dir,
            transform_dir=self.transform_dir,
            features=self.features,
            ready=transform_ready,
        )
        done = model
        if not self.keep_standardized:
            # After the final pass has read every shard (its partials are complete).
            done = model | "RemoveWorkDir" >> beam.Map(
                _remove_dir, path=self.work_dir, after=beam.pvalue.AsList(assigned["partials"])
            )
        return {
            "state": state,
            "selection": selection,
            "final": assigned["partials"],
            "assignments": assigned["assignments"],
            "model": model,
            "sample": sample,
            "done": done,
        }


def _check_ks(ks: tuple) -> tuple:
    """The Ks to fit, ascending; a sweep (several) needs each K >= 2 to score it."""
    if not ks:
        raise UserInputError("n_clusters is an empty list")
    if any(int(k) != k or k < 1 for k in ks):
        raise UserInputError(f"every K must be a whole number >= 1, got {list(ks)}")
    if len(set(ks)) != len(ks):
        raise UserInputError(f"a K appears twice in {list(ks)}")
    if len(ks) > 1 and min(ks) < 2:
        raise UserInputError(f"a sweep compares clusterings: every K must be >= 2, got {list(ks)}")
    return tuple(sorted(int(k) for k in ks))


def _to_record_batches(elements: list, features: List[str], passthrough: pa.Schema):
    """A list from `batch_elements` -> record batches of `FEATURES_COLUMN` + passthrough.

    Record batches pass as they are; each array is one batch; the dict rows of
    the list become one batch.
    """
    batches, arrays, rows = split_kinds(elements)
    yield from batches
    for x in arrays:
        yield _record_batch(np.asarray(x, np.float64), [], features, passthrough)
    if rows:
        x = np.array([[row[name] for name in features] for row in rows], np.float64)
        yield _record_batch(x, rows, features, passthrough)


def _record_batch(
    x: np.ndarray, rows: list, features: List[str], passthrough: pa.Schema
) -> pa.RecordBatch:
    if x.ndim != 2 or x.shape[1] != len(features):
        raise ValueError(f"rows of shape {x.shape}; expected [n, {len(features)}]")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(
            f"row {rows[bad[0]] if rows else bad[0]} has a NaN or infinite "
            f"feature; validate rows before KMeans"
        )
    columns = [matrix_to_features(x)] + [
        pa.array([row.get(field.name) for row in rows], field.type)
        if rows
        else pa.nulls(len(x), field.type)
        for field in passthrough
    ]
    return pa.RecordBatch.from_arrays(columns, names=[FEATURES_COLUMN] + passthrough.names)


def _to_table(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """A record batch of raw rows -> a Table of the shard's schema (a cast only if the types differ)."""
    table = pa.Table.from_batches([batch])
    return table if table.schema.equals(schema, check_metadata=False) else table.cast(schema)


def _hashed_rows(batch: pa.RecordBatch, n_features: int, seed: int):
    x = features_to_matrix(batch.column(FEATURES_COLUMN), n_features, np.float64)
    return row_hashes(x, seed), x


def _standardized_sample(sample, transform_dir: str, ready) -> np.ndarray:
    """The bottom-m sample -> its rows standardized, float64 [m, D] (float32 values, like the shards)."""
    del ready  # orders this step after the transform is written
    if len(sample.rows) == 0:
        raise UserInputError("no valid rows to cluster: every row was rejected")
    return Standardizer(transform_dir, sample.rows.shape[1])(sample.rows).astype(np.float64)


def _export(
    state: RoundState, model_dir: str, transform_dir: str, features: List[str], ready
) -> str:
    """Write the SavedModel of the final centroids; return its directory."""
    del ready
    import tensorflow_transform as tft

    export_model(
        model_dir,
        tft.TFTransformOutput(transform_dir).transform_savedmodel_dir,
        state.centroids.astype(np.float32),
        features,
        merge_map=state.merge_map,
    )
    return model_dir


def _remove_dir(model_dir: str, path: str, after) -> str:
    """Remove the work directory; return `model_dir` (the fit's last step is done)."""
    del after
    if FileSystems.exists(path):
        FileSystems.delete([path])
        logging.info("removed work directory %s", path)
    return model_dir
