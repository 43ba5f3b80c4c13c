"""The `KMeans` PTransform: rows in, a fitted model out (tf.Transform + Lloyd rounds + SavedModel).

    fitted = rows | KMeans(k=8, features=["a", "b"], output_dir="gs://b/model")

Steps: every row is written once to Arrow shards in a work directory while
tf.Transform analyses the global mean and variance (OUTPUT_DIR/transform_fn/)
and a bottom-m hash sample is drawn, all in the pass that reads the rows; the
sample gives the initial centroids of every start (each K of a sweep x each
restart), and by default the best start of each K on the sample is the
candidate carried on; up to `max_rounds` Lloyd rounds run over the shards for
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

import functools
import logging
import uuid
from typing import List, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems

from transforms.beam import job_metrics, warm_start
from transforms.beam.candidates import ChooseCandidate, InitialCandidates
from transforms.beam.combiners import BottomSampleFn
from transforms.beam.elements import (
    REJECTED,
    array_rows,
    batch_elements,
    rejection,
    row_categories,
    row_matrix,
    row_weights,
    split_kinds,
)
from transforms.beam.model_paths import MODEL_BASE
from transforms.beam.rounds import AssignShards, LloydRounds, StepConfig
from transforms.beam.shards import (
    CATEGORIES_COLUMN,
    FEATURES_COLUMN,
    WEIGHT_COLUMN,
    WriteShards,
    categories_to_matrix,
    default_cache_mb,
    features_to_matrix,
    matrix_to_categories,
    matrix_to_features,
    raw_shard_schema,
)
from transforms.core import parameters, vectors
from transforms.core.categorical import MISSING_VALUE, Layout
from transforms.core.centroids import Centroids, in_original_units
from transforms.core.errors import UserInputError
from transforms.core.hierarchy import merge_clusters
from transforms.core.lloyd import RoundState
from transforms.core.sampling import Sample, priority_keys, row_hashes
from transforms.core.statistics import ClusterStats
from transforms.step.export import MODEL_VERSION, export_model
from transforms.step.preprocessing import Standardizer, preprocessing_fn, tensor_adapter_config

_FIT = {p.name: p for p in parameters.FIT}


class KMeans(beam.PTransform):
    """Fit K-Means on a PCollection of rows; returns a dict of PCollections.

    Input elements, any mix of:
      - dict rows {feature: number, ...} or beam.Rows (other fields named in
        `passthrough` are kept);
      - NumPy float arrays [n, D] (or one row [D]), columns in `features` order;
      - Arrow record batches with `FEATURES_COLUMN` (list<float64>, D values a
        row) and the `passthrough` columns (what pipeline's readers produce).
    A row whose feature is missing, null, not a number, NaN or infinite goes to
    the `rejected` output with its reason (transforms.beam.elements).
    With `weight_column`, each dict row or beam.Row has that field, its weight (a
    finite number >= 0; else the row is rejected with the reason), and a record
    batch has a float64 `WEIGHT_COLUMN`; arrays have no weights (their rows are
    rejected).

    Output:
      state:       one RoundState of the chosen fit (centroids float64 [K, D]
                   standardized, rounds, converged, inertia_history).
      centroids:   one core.centroids.Centroids: the chosen fit's centroids in the
                   space it ran in (`standardized`) and in the input's units
                   (`original`), with the feature names.
      selection:   one core.selection.Selection: the chosen fit and, with restarts or a
                   sweep, the inertia of every candidate and the scores of every K.
      final:       one Partials of the final pass against the final centroids
                   (counts = cluster sizes, inertia).
      statistics:  one core.statistics.ClusterStats of the final pass: sizes, radii
                   and the quantiles of the normalized distance (anomaly thresholds).
      assignments: record batches: passthrough columns + cluster_id (int64) +
                   distance (float32, standardized space: Euclidean, or 1 - cos
                   with distance="cosine") + normalized_distance (float32, the
                   distance over its cluster's radius); with top_n > 0 also
                   nearest_cluster_ids (list<int64>) and nearest_distances
                   (list<float32>): the top_n nearest centroids, nearest first.
      model:       one element, the model's version directory (OUTPUT_DIR/model/1),
                   once the SavedModel is written.
      sample:      one core.sampling.Sample: the bottom-m rows (raw, float64 [m, D]) the
                   initialisation used; bounded by init_sample_size.
      rejected:    str, one JSON object per row that could not be clustered: {"reason",
                   "row"} (a feature missing, null, not a number, NaN or infinite).
      done:        one element, the model's version directory, once everything `KMeans`
                   writes is written and its work directory is removed (unless
                   kept): what a step that publishes OUTPUT_DIR waits for.
    OUTPUT_DIR/transform_fn/ and OUTPUT_DIR/model/1/ are written.

    Arguments are the `shardmeans fit` flags of the same name, with the same
    defaults and constraints (transforms.core.parameters holds each one's help):
    k (one K, or a list of Ks: a sweep, every K fitted in the same passes, one
    chosen by `select` on the bounded init sample), n_init restarts of each K
    competing where `restarts_on` says, seed (the init sample's hash and the
    first restart's draws), init_seed (restart r draws with init_seed + r),
    max_rounds, tol (total squared centroid shift in standardized space), init
    ("k-means++", "random", or an array [K, D] of centroids in standardized
    space: one start, n_init 1), init_model (a warm start instead of init: the
    path of a fitted model, or a warm_start.WarmStart read from one; its centroids
    are taken in original units and standardized with this fit's statistics; its
    features, standardize, distance and K must be this fit's), init_sample_size, init_refine_rounds, merge_to
    (size-weighted Ward merge into that many groups: the state gets merge_map and
    linkage, the assignments and the SavedModel a merged_cluster_id), standardize
    ("z_score" or "none"), distance ("euclidean" or "cosine": spherical K-Means on
    the scaled rows divided by their norms), missing ("reject" or "impute": a missing
    or null value becomes the feature's training mean, inside the transform; in an
    array, NaN is a missing value), contamination (the model's default
    fraction of anomalies: it outputs is_anomaly), batch_size,
    cache_mb, devices, keep_standardized, weight_column (sample weights: the
    partial sums, inertia, re-seeding, init, selection, radii and Ward merge are
    weighted; the standardization is not; docs/weights.md), top_n (each row's top_n
    nearest centroids in the assignments; at most the smallest K). Besides them: `features` (the D
    feature names), `output_dir` (OUTPUT_DIR), `passthrough` (the schema of the
    columns copied to the assignments) and `work_dir` (the shards; default
    OUTPUT_DIR/_work; at the end only what this fit wrote there is removed, and the
    directory itself once empty). A bad value raises UserInputError naming it.
    """

    def __init__(
        self,
        k: Union[int, Sequence[int]],
        features: List[str],
        output_dir: str,
        *,
        n_init: Optional[int] = _FIT["n_init"].default,
        restarts_on: str = _FIT["restarts_on"].default,
        select: str = _FIT["select"].default,
        seed: int = _FIT["seed"].default,
        init_seed: Optional[int] = _FIT["init_seed"].default,
        max_rounds: int = _FIT["max_rounds"].default,
        tol: float = _FIT["tol"].default,
        init: Union[str, np.ndarray] = _FIT["init"].default,
        init_model: Union[str, warm_start.WarmStart, None] = _FIT["init_model"].default,
        standardize: str = _FIT["standardize"].default,
        distance: str = _FIT["distance"].default,
        missing: str = _FIT["missing"].default,
        categorical: Union[str, Sequence[str], None] = _FIT["categorical"].default,
        max_categories: int = _FIT["max_categories"].default,
        contamination: Optional[float] = parameters.BY_NAME["contamination"].default,
        init_sample_size: int = _FIT["init_sample_size"].default,
        init_refine_rounds: int = _FIT["init_refine_rounds"].default,
        merge_to: Optional[int] = _FIT["merge_to"].default,
        batch_size: int = _FIT["batch_size"].default,
        cache_mb: Optional[int] = _FIT["cache_mb"].default,
        devices: str = _FIT["devices"].default,
        keep_standardized: bool = parameters.BY_NAME["keep_standardized"].default,
        weight_column: Optional[str] = parameters.BY_NAME["weight_column"].default,
        top_n: int = parameters.BY_NAME["top_n"].default,
        passthrough: Optional[pa.Schema] = None,
        work_dir: Optional[str] = None,
    ):
        # Every argument that is a parameter of the command, checked as the command
        # checks it (given centroids, an array, are checked below).
        checked = {n: v for n, v in locals().items() if n in parameters.BY_NAME and n != "k"}
        super().__init__()
        self.ks = parameters.parse_ks(k)
        given = not isinstance(init, str)
        parameters.check_fit(self.ks, dict(checked, init=None if given else init))
        n_init = parameters.resolve_n_init(n_init, given=given or init_model is not None)
        if isinstance(categorical, str):
            categorical = [name for name in categorical.split(",") if name]
        try:
            self.layout = Layout.of(list(features), list(categorical or ()), max_categories)
        except ValueError:
            unknown = [name for name in categorical if name not in features]
            raise UserInputError(
                f"categorical names {', '.join(map(repr, unknown))}, not among the features "
                f"({', '.join(features)})"
            ) from None
        if self.layout.categorical and init_model is not None:
            raise UserInputError(
                "init_model with categorical features: a warm start maps numeric centroids "
                "only; fit from k-means++ (its vocabularies come from the new data)"
            )
        # A warm start's centroids, original units [K, D]: standardized once this
        # fit's transform is written (expand).
        self._warm, self.init_model = None, None
        if init_model is not None:
            if given or init != _FIT["init"].default:
                raise UserInputError(
                    f"init_model gives the initial centroids: it takes no init, got "
                    f"init={'an array' if given else repr(init)}"
                )
            if len(self.ks) > 1 or n_init > 1:
                raise UserInputError(
                    f"init_model is one start: it takes a single K and n_init=1, got "
                    f"k={','.join(map(str, self.ks))}, n_init={n_init}"
                )
            warm = (
                init_model
                if isinstance(init_model, warm_start.WarmStart)
                else warm_start.read_model(init_model)
            )
            self._warm = warm_start.check_matches(
                warm, list(features), self.ks[0], standardize, distance
            )
            self.init_model = warm.model_dir
        if self._warm is not None:
            self._init, self._given = "given", None
        elif not given:
            if init not in parameters.INIT_METHODS:
                raise UserInputError(
                    f"init must be one of {', '.join(parameters.INIT_METHODS)} or an "
                    f"array [K, D] of centroids (numpy.load a .npy first), got {init!r}"
                )
            self._init, self._given = init, None
        else:
            self._init, self._given = "given", np.asarray(init, np.float64)
            if len(self.ks) > 1 or n_init > 1:
                raise UserInputError(
                    f"given initial centroids are one start: they take a single "
                    f"K and n_init=1, got k={list(self.ks)}, n_init={n_init}"
                )
            if self._given.shape != (self.ks[0], self.layout.width):
                raise UserInputError(
                    f"init has shape {self._given.shape}, expected {(self.ks[0], self.layout.width)}"
                )
        self.features, self.output_dir = list(features), output_dir
        self.standardize, self.distance, self.missing = standardize, distance, missing
        self.contamination, self.top_n = contamination, top_n
        self.max_rounds, self.tol, self.seed = max_rounds, tol, seed
        self.n_init, self.restarts_on, self.select = n_init, restarts_on, select
        # Restart r of every K draws with seed init_seed + r: restart r alone is
        # the fit with n_init=1 and init_seed + r (the sample's hash keeps seed).
        first = seed if init_seed is None else init_seed
        self.starts = [
            (k, None if self._init == "given" else (first + r) % 2**32)
            for k in self.ks
            for r in range(n_init)
        ]
        self.init_sample_size = init_sample_size
        self.init_refine_rounds = init_refine_rounds
        self.passthrough = passthrough if passthrough is not None else pa.schema([])
        self.work_dir = work_dir or FileSystems.join(output_dir, "_work")
        self.keep_standardized = keep_standardized
        # Names this fit's shards: a process-wide cache keyed by shard path or
        # transform must not serve a previous fit into the same directory.
        self._run = uuid.uuid4().hex[:12]
        self.merge_to = merge_to
        self.weight_column = weight_column
        if weight_column is not None and weight_column in self.features:
            raise UserInputError(
                f"weight_column {weight_column!r} is a feature: a weight is not clustered on"
            )
        self.max_categories = max_categories
        self.step = StepConfig(
            n_features=self.layout.width,
            batch_size=batch_size,
            cache_mb=default_cache_mb() if cache_mb is None else cache_mb,
            devices=devices,
            distance=distance,
            weighted=weight_column is not None,
        )

    @property
    def transform_dir(self) -> str:
        return FileSystems.join(self.output_dir, "transform_fn")

    @property
    def model_dir(self) -> str:
        """The SavedModel's version directory, OUTPUT_DIR/model/1."""
        return FileSystems.join(self.output_dir, MODEL_BASE, str(MODEL_VERSION))

    def expand(self, rows):
        d, c = len(self.layout.numeric), len(self.layout.categorical)
        converted = (
            rows
            | "Batch" >> batch_elements(self.step.batch_size)
            | "ToRecordBatches"
            >> beam.FlatMap(
                _to_record_batches,
                features=list(self.layout.numeric),
                categorical=list(self.layout.categorical),
                passthrough=self.passthrough,
                weight_column=self.weight_column,
                impute=self.missing == "impute",
            ).with_outputs(REJECTED, main="batches")
        )
        batches = converted.batches

        raw = [pa.field(FEATURES_COLUMN, pa.list_(pa.float64()))]
        raw += [pa.field(CATEGORIES_COLUMN, pa.list_(pa.string()))] if c else []
        with tft_beam.Context(temp_dir=FileSystems.join(self.work_dir, "tft")):
            transform_fn = (
                batches
                | "FeaturesOnly"
                >> beam.Map(lambda b, names: b.select(names), [f.name for f in raw]),
                tensor_adapter_config(pa.schema(raw), FEATURES_COLUMN, d, CATEGORIES_COLUMN, c),
            ) | "Analyze" >> tft_beam.AnalyzeDataset(
                functools.partial(
                    preprocessing_fn,
                    standardize=self.standardize,
                    distance=self.distance,
                    missing=self.missing,
                    max_categories=self.max_categories,
                )
            )
            written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
                self.transform_dir
            )
        transform_ready = beam.pvalue.AsIter(written)

        # In the read stage, next to the analysis and the sample: nothing here
        # waits for the analysis, so no stage holds the rows (see the module doc).
        weighted = self.step.weighted
        shard_schema = raw_shard_schema(
            self.passthrough, self.transform_dir, self._run, weighted, d, c
        )
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
            | "HashRows"
            >> beam.Map(
                _hashed_rows, n_features=d, seed=self.seed, weighted=weighted, n_categorical=c
            )
            | "BottomSample"
            >> beam.CombineGlobally(BottomSampleFn(self.init_sample_size, d, weighted, c))
        )
        standardized_sample = beam.pvalue.AsSingleton(
            sample
            | "StandardizeSample"
            >> beam.Map(
                _standardized_sample,
                transform_dir=self.transform_dir,
                ready=transform_ready,
                m=self.init_sample_size,
                layout=self.layout,
                impute=self.missing == "impute",
            )
        )
        if weighted:  # the output holds the sample's m rows, not the one beyond them
            m = self.init_sample_size
            sample = sample | "TrimSample" >> beam.Map(
                lambda s: Sample(*(None if a is None else a[:m] for a in s))
            )
        given = self._given
        if self._warm is not None:
            given = beam.pvalue.AsSingleton(
                rows.pipeline
                | "InitModel" >> beam.Create([self._warm])
                | "StandardizeInitModel"
                >> beam.Map(
                    warm_start.standardize_centroids,
                    transform_dir=self.transform_dir,
                    ready=transform_ready,
                )
            )
        init = InitialCandidates(
            self.starts,
            standardized_sample,
            self._init,
            given,
            self.init_refine_rounds,
            self.tol,
            self.restarts_on,
            spherical=self.step.cosine,
        )
        initial = rows.pipeline | "InitCentroids" >> init
        candidates = shard_paths | "Lloyd" >> LloydRounds(
            initial, self.step, self.max_rounds, self.tol
        )
        selection = shard_paths | "Choose" >> ChooseCandidate(
            candidates,
            init.n_candidates,
            standardized_sample,
            self.step,
            self.select,
            self.seed,
        )
        state = selection | "Chosen" >> beam.Map(lambda chosen: chosen.state)
        if self.merge_to is not None:
            state = state | "WardMerge" >> beam.Map(merge_clusters, n_groups=self.merge_to)
        assigned = shard_paths | "FinalAssign" >> AssignShards(
            state, self.step, self.contamination, self.top_n
        )
        centroids = state | "Centroids" >> beam.Map(
            _centroids,
            transform_dir=self.transform_dir,
            layout=self.layout,
            impute=self.missing == "impute",
            ready=transform_ready,
        )
        model = state | "ExportModel" >> beam.Map(
            _export,
            statistics=beam.pvalue.AsSingleton(assigned["statistics"]),
            model_dir=self.model_dir,
            transform_dir=self.transform_dir,
            layout=self.layout,
            distance=self.distance,
            missing=self.missing,
            contamination=self.contamination,
            ready=transform_ready,
        )
        done = model
        if not self.keep_standardized:
            # After the final pass has read every shard (its partials are complete).
            done = model | "RemoveWorkFiles" >> beam.Map(
                _remove_work_files,
                work_dir=self.work_dir,
                run=self._run,
                after=beam.pvalue.AsList(assigned["partials"]),
            )
        return {
            "state": state,
            "centroids": centroids,
            "selection": selection,
            "final": assigned["partials"],
            "statistics": assigned["statistics"],
            "assignments": assigned["assignments"],
            "model": model,
            "sample": sample,
            "done": done,
            "rejected": converted[REJECTED],
        }


def _to_record_batches(
    elements: list,
    features: List[str],
    passthrough: pa.Schema,
    impute: bool = False,
    weight_column: Optional[str] = None,
    categorical: Sequence[str] = (),
):
    """A list from `batch_elements` -> record batches of `FEATURES_COLUMN` (the numeric
    `features`; + `CATEGORIES_COLUMN`, the `categorical` ones' values) (+ `WEIGHT_COLUMN`
    with a `weight_column`) + passthrough, and, tagged REJECTED, a JSON line for each row
    that cannot be clustered.

    Record batches pass as they are (the command's readers validated them); each
    array is one batch; the dict rows and beam.Rows of the list become one batch.
    `impute`: a missing value is NaN in the batch (`row_matrix`), not a rejection.
    """
    batches, arrays, rows = split_kinds(elements)
    for batch in batches:
        if weight_column is not None and WEIGHT_COLUMN not in batch.schema.names:
            raise UserInputError(
                f"a record batch without the weights column {WEIGHT_COLUMN!r} in a fit "
                f"weighted by {weight_column!r} (columns: {', '.join(batch.schema.names)})"
            )
        yield batch
    for array in arrays:
        x, bad = array_rows(array, len(features), impute)
        if weight_column is not None:  # an array row has no field to hold a weight
            bad = [(i, f"an array row has no weight {weight_column!r}") for i in range(len(x))]
        if categorical:  # nor a place for text
            bad = [(i, "an array row has no categorical features") for i in range(len(x))]
        yield from _kept(x, [], bad, passthrough, lambda i, x=x: x[i])
    if rows:
        x, bad = row_matrix(rows, features, impute)
        reasons = [bad]
        values = None
        if categorical:
            values, bad_values = row_categories(rows, categorical, impute)
            reasons.insert(0, bad_values)
        w = None
        if weight_column is not None:
            w, bad_weights = row_weights(rows, weight_column)
            reasons.insert(0, bad_weights)
        first = {}
        for found in reasons:  # a numeric feature's reason first, then a category's
            first.update(found)
        bad = sorted(first.items())
        yield from _kept(x, rows, bad, passthrough, lambda i: rows[i], w, values)


def _kept(x, rows, bad, passthrough, original, w=None, categories=None):
    """The record batch of the rows not in `bad` [(index, reason)], then the rejections."""
    for i, reason in bad:
        yield beam.pvalue.TaggedOutput(REJECTED, rejection(original(i), reason))
    if bad:
        keep = np.setdiff1d(np.arange(len(x)), [i for i, _ in bad])
        x, rows = x[keep], [rows[i] for i in keep] if rows else rows
        w = None if w is None else w[keep]
        categories = None if categories is None else categories[keep]
    if len(x):
        yield _record_batch(x, rows, passthrough, w, categories)


def _record_batch(
    x: np.ndarray,
    rows: list,
    passthrough: pa.Schema,
    w: Optional[np.ndarray] = None,
    categories: Optional[np.ndarray] = None,
) -> pa.RecordBatch:
    """Valid rows float64 [n, D_num] (their categorical values object [n, C], if any; their
    dicts, for the passthrough columns; their weights float64 [n], if weighted) -> a batch."""
    weights = [] if w is None else [pa.array(w, pa.float64())]
    text = [] if categories is None else [matrix_to_categories(categories)]
    columns = (
        [matrix_to_features(x)]
        + text
        + weights
        + [
            pa.array([row.get(field.name) for row in rows], field.type)
            if rows
            else pa.nulls(len(x), field.type)
            for field in passthrough
        ]
    )
    names = (
        [FEATURES_COLUMN]
        + ([CATEGORIES_COLUMN] if categories is not None else [])
        + ([WEIGHT_COLUMN] if w is not None else [])
        + passthrough.names
    )
    return pa.RecordBatch.from_arrays(columns, names=names)


def _to_table(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """A record batch of raw rows -> a Table of the shard's schema (a cast only if the types differ)."""
    table = pa.Table.from_batches([batch])
    return table if table.schema.equals(schema, check_metadata=False) else table.cast(schema)


def _hashed_rows(
    batch: pa.RecordBatch, n_features: int, seed: int, weighted: bool = False, n_categorical=0
):
    """(hashes, rows float64 [n, D_num]), or weighted (priority keys, rows, weights float64
    [n]); with categorical features (hashes or keys, rows, weights or None, categories
    object [n, C]): BottomSampleFn's elements."""
    x = features_to_matrix(batch.column(FEATURES_COLUMN), n_features, np.float64)
    categories = None
    if n_categorical:
        categories = categories_to_matrix(batch.column(CATEGORIES_COLUMN), n_categorical)
    hashes = row_hashes(x, seed, categories)
    w = None
    if weighted:
        w = batch.column(WEIGHT_COLUMN).to_numpy(zero_copy_only=False).astype(np.float64)
        hashes = priority_keys(hashes, w)
    if n_categorical:
        return hashes, x, w, categories
    return (hashes, x, w) if weighted else (hashes, x)


def _standardized_sample(sample, transform_dir: str, ready, m: int, layout: Layout, impute: bool):
    """The bottom-m sample -> its rows standardized, float64 [m, D] (float32 values, like
    the shards); weighted, a Sample of the m rows standardized, their weights and the
    m + 1 keys (`seeding.sample_rows` weighs them). Imputing, a feature no valid row
    has a value of is an error: its mean, what a missing value becomes, does not exist."""
    del ready  # orders this step after the transform is written
    if len(sample.rows) == 0:
        raise UserInputError("no valid rows to cluster: every row was rejected")
    job_metrics.record_time(job_metrics.ANALYSED_MS)  # (the transform is written)
    rows = sample.rows[:m]
    categories = None if sample.categories is None else sample.categories[:m]
    job_metrics.record(job_metrics.SAMPLE_ROWS, len(rows))
    c = len(layout.categorical)
    standardizer = Standardizer(transform_dir, rows.shape[1], c)
    if impute:
        mean, _ = standardizer.mean_and_std()
        filled = standardizer(np.full((1, rows.shape[1]), np.nan), [[MISSING_VALUE] * c])[0]
        for name, mu, f in zip(layout.numeric, mean, filled):
            if np.isnan(mu) or np.isnan(f):
                raise UserInputError(
                    f"feature {name!r} has no value in any valid row: there is no "
                    f"mean to impute (--missing impute); leave it out of --features"
                )
    x = standardizer(rows, categories).astype(np.float64)
    if sample.weights is None:
        return x
    if not sample.weights.any():  # the sample takes rows of positive weight first
        raise UserInputError("every valid row has weight 0: there is nothing to cluster")
    return Sample(sample.hashes, x, sample.weights[:m])


def _centroids(
    state: RoundState, transform_dir: str, layout: Layout, impute: bool, ready
) -> Centroids:
    """The chosen centroids in both spaces (the transform's mean and std map them back);
    a categorical feature's columns are its categories' shares, FEATURE=VALUE, those no
    training row can fill left out (core.categorical.Layout.used_columns)."""
    del ready
    standardizer = Standardizer(transform_dir, len(layout.numeric), len(layout.categorical))
    return reported_centroids(state.centroids, standardizer, layout, impute)


def reported_centroids(centroids, standardizer: Standardizer, layout: Layout, impute: bool):
    """Centroids float [K, D] of the space the fit ran in -> the `Centroids` to report: the
    columns worth showing, named, in both spaces."""
    mean, std = standardizer.mean_and_std()
    standardized = np.asarray(centroids, np.float64)
    vocabularies = standardizer.vocabularies()
    used = layout.used_columns(vocabularies, impute)
    names = layout.columns(vocabularies)
    return Centroids(
        [names[j] for j in used],
        standardized[:, used],
        in_original_units(standardized, mean, std)[:, used],
    )


def _export(
    state: RoundState,
    statistics: ClusterStats,
    model_dir: str,
    transform_dir: str,
    layout: Layout,
    distance: str,
    missing: str,
    contamination: Optional[float],
    ready,
) -> str:
    """Write the SavedModel of the final centroids; return its directory."""
    del ready
    import tensorflow_transform as tft

    export_model(
        model_dir,
        tft.TFTransformOutput(transform_dir).transform_savedmodel_dir,
        state.centroids.astype(np.float32),
        list(layout.numeric),
        merge_map=state.merge_map,
        distance=distance,
        missing=missing,
        statistics=statistics,
        contamination=contamination,
        columns=vectors.group(layout.numeric),
        categorical=list(layout.categorical),
    )
    return model_dir


def _remove_work_files(model_dir: str, work_dir: str, run: str, after) -> str:
    """Remove what this fit wrote under `work_dir`: its shards (shards/rows-RUN*) and
    tf.Transform's temporary files (tft/tftransform_tmp), then tft/, shards/ and
    `work_dir` itself where they are left empty; return `model_dir` (the fit's last
    step is done).

    Nothing else: `work_dir` may be a directory the caller keeps other files in.
    """
    del after
    shards, tft = FileSystems.join(work_dir, "shards"), FileSystems.join(work_dir, "tft")
    ours = _matching(FileSystems.join(shards, f"rows-{run}*"))
    ours += [p for p in [FileSystems.join(tft, "tftransform_tmp")] if FileSystems.exists(p)]
    if ours:
        FileSystems.delete(ours)
    for directory in (tft, shards, work_dir):
        if FileSystems.exists(directory) and not _matching(FileSystems.join(directory, "*")):
            FileSystems.delete([directory])  # empty (object stores have no directories)
    # (DEBUG: a step of every fit, not news; --verbose shows it)
    logging.getLogger(__name__).debug(
        "removed this fit's files under the work directory %s", work_dir
    )
    return model_dir


def _matching(pattern: str) -> list:
    """The paths `pattern` matches (none when its directory does not exist)."""
    try:
        return [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    except Exception:  # noqa: BLE001 -- Beam raises for a pattern under no directory
        return []
