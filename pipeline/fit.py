"""The `fit` job: its validated specification, and the function that builds (not runs) its graph."""
import os
import uuid
from typing import List, NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions

from pipeline import outputs
from pipeline.ingest import ReadValidRows
from pipeline.options import InputOptions, KMeansOptions, OutputOptions
from pipeline.readers import FORMATS, format_from_path, match_input, probe_columns
from transforms.errors import UserInputError
from transforms.init import INIT_METHODS, BottomSampleFn, initial_centroids, row_hashes
from transforms.lloyd import RoundState
from transforms.preprocessing import Standardizer, preprocessing_fn, tensor_adapter_config
from transforms.rounds import AssignShards, LloydRounds, StepConfig
from transforms.shards import FEATURES_COLUMN, default_cache_mb, features_to_matrix, matrix_to_features


class FitSpec(NamedTuple):
    """Everything the fit graph needs, checked against the options and the first input file."""

    input: str
    format: str
    features: List[str]
    passthrough: pa.Schema  # columns copied to the assignments, as read
    id_column: Optional[str]
    on_invalid: str
    output: str
    work_dir: str
    keep_standardized: bool
    k: int
    seed: int
    max_rounds: int
    tol: float
    init: str  # "k-means++", "random" or "given"
    init_centroids: Optional[np.ndarray]  # float64 [K, D] when init == "given"
    init_sample_size: int
    step: StepConfig


def fit_spec(options) -> FitSpec:
    """Validate the fit options against the input; UserInputError names what is wrong."""
    inp, km, out = (options.view_as(c) for c in (InputOptions, KMeansOptions, OutputOptions))
    for flag, value in (("--input", inp.input), ("--output", out.output), ("--k", km.k)):
        if value is None:
            raise UserInputError(f"{flag} is required")
    if km.k < 1:
        raise UserInputError(f"--k must be at least 1, got {km.k}")
    for flag, value, low in (("--max_rounds", km.max_rounds, 1), ("--batch_size", km.batch_size, 1),
                             ("--init_sample_size", km.init_sample_size, km.k)):
        if value < low:
            raise UserInputError(f"{flag} must be at least {low}, got {value}")
    if not km.tol >= 0:
        raise UserInputError(f"--tol must be >= 0, got {km.tol}")
    if km.cache_mb is not None and km.cache_mb < 0:
        raise UserInputError(f"--cache_mb must be >= 0, got {km.cache_mb}")

    files = match_input(inp.input)
    fmt = inp.format or format_from_path(files[0])
    schema, numeric = probe_columns(files[0], fmt)
    if inp.id_column is not None and inp.id_column not in schema.names:
        raise UserInputError(f"--id_column {inp.id_column!r} is not a column of {files[0]} "
                             f"(columns: {', '.join(schema.names)})")
    features = _features(inp.features, schema, numeric, inp.id_column, files[0])
    passthrough = (pa.schema([schema.field(inp.id_column)]) if inp.id_column else schema)

    init, given = _init(km.init, km.k, len(features))
    work_dir = (f"{options.view_as(GoogleCloudOptions).temp_location.rstrip('/')}/"
                f"shardmeans-{uuid.uuid4().hex[:12]}"
                if options.view_as(GoogleCloudOptions).temp_location
                else FileSystems.join(out.output, "_work"))
    return FitSpec(
        input=inp.input, format=fmt, features=features, passthrough=passthrough,
        id_column=inp.id_column, on_invalid=inp.on_invalid, output=out.output,
        work_dir=work_dir, keep_standardized=out.keep_standardized, k=km.k, seed=km.seed,
        max_rounds=km.max_rounds, tol=km.tol, init=init, init_centroids=given,
        init_sample_size=km.init_sample_size,
        step=StepConfig(n_clusters=km.k, n_features=len(features), batch_size=km.batch_size,
                        cache_mb=default_cache_mb() if km.cache_mb is None else km.cache_mb,
                        devices=km.devices))


def _features(requested, schema, numeric, id_column, path) -> List[str]:
    if requested is None:
        features = [n for n in numeric if n != id_column]
        if not features:
            raise UserInputError(f"{path} has no numeric column to cluster on "
                                 f"(columns: {', '.join(schema.names)}); pass --features")
        return features
    features = [f.strip() for f in requested.split(",") if f.strip()]
    if not features:
        raise UserInputError("--features is empty")
    for name in features:
        if name not in schema.names:
            raise UserInputError(f"unknown feature {name!r}: {path} has columns "
                                 f"{', '.join(schema.names)}")
        if name not in numeric:
            raise UserInputError(f"feature {name!r} of {path} is not numeric "
                                 f"(type {schema.field(name).type})")
    if len(set(features)) != len(features):
        raise UserInputError(f"--features names a column twice: {requested!r}")
    return features


def _init(init: str, k: int, d: int):
    if init in INIT_METHODS:
        return init, None
    if not init.endswith(".npy"):
        raise UserInputError(f"--init must be one of {', '.join(INIT_METHODS)} or a .npy file, "
                             f"got {init!r}")
    try:
        with FileSystems.open(init) as f:
            given = np.load(f, allow_pickle=False)
    except Exception as e:
        raise UserInputError(f"cannot read --init {init}: {e}") from None
    if given.shape != (k, d) or not np.all(np.isfinite(given)):
        raise UserInputError(f"--init {init} holds an array of shape {given.shape}; expected "
                             f"finite [{k}, {d}] (k, number of features)")
    return "given", given.astype(np.float64)


def build_fit_pipeline(pipeline: beam.Pipeline, spec: FitSpec) -> None:
    """Add the fit job to `pipeline` (runs nothing): read, transform, materialize, init, rounds, outputs."""
    d = len(spec.features)
    transform_dir = FileSystems.join(spec.output, "transform_fn")
    rows = pipeline | "Read" >> ReadValidRows(spec.input, spec.format, spec.features,
                                              spec.passthrough, spec.on_invalid,
                                              spec.step.batch_size)
    rejected_files = rows["rejected"] | "WriteRejected" >> outputs.WriteRejected(spec.output)

    with tft_beam.Context(temp_dir=FileSystems.join(spec.work_dir, "tft")):
        features_only = rows["valid"] | "FeaturesOnly" >> beam.Map(
            lambda batch: batch.select([FEATURES_COLUMN]))
        adapter = tensor_adapter_config(
            pa.schema([pa.field(FEATURES_COLUMN, pa.list_(pa.float64()))]), FEATURES_COLUMN, d)
        transform_fn = (features_only, adapter) | "Analyze" >> tft_beam.AnalyzeDataset(
            preprocessing_fn)
        transform_written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(
            transform_dir)
    transform_ready = beam.pvalue.AsIter(transform_written)

    shard_paths = (
        rows["valid"]
        | "Standardize" >> beam.ParDo(_StandardizeFn(transform_dir, d), ready=transform_ready)
        | "Materialize" >> beam.io.WriteToParquetBatched(
            FileSystems.join(spec.work_dir, "standardized", "part"),
            schema=_shard_schema(spec.passthrough), file_name_suffix=".parquet")
        | "SpreadShards" >> beam.Reshuffle())

    initial_state = (
        rows["valid"]
        | "HashRows" >> beam.Map(_hashed_rows, n_features=d, seed=spec.seed)
        | "BottomSample" >> beam.CombineGlobally(BottomSampleFn(spec.init_sample_size, d))
        | "InitCentroids" >> beam.Map(_initial_state, spec=spec, transform_dir=transform_dir,
                                      ready=transform_ready))
    final_state = shard_paths | "Lloyd" >> LloydRounds(initial_state, spec.step,
                                                       spec.max_rounds, spec.tol)
    assigned = shard_paths | "FinalAssign" >> AssignShards(final_state, spec.step)
    assignment_files = assigned["assignments"] | "WriteAssignments" >> outputs.WriteAssignments(
        spec.output, spec.format, spec.passthrough)
    results = final_state | "WriteResults" >> beam.Map(
        outputs.write_results, partials=beam.pvalue.AsSingleton(assigned["partials"]),
        counts=beam.pvalue.AsSingleton(rows["counts"]), spec=spec, transform_dir=transform_dir)
    if not spec.keep_standardized:
        _ = results | "RemoveWorkDir" >> beam.Map(
            outputs.remove_dir, path=spec.work_dir,
            after=(beam.pvalue.AsList(assignment_files), beam.pvalue.AsList(rejected_files)))


def _shard_schema(passthrough: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(FEATURES_COLUMN, pa.list_(pa.float32()))] + list(passthrough))


class _StandardizeFn(beam.DoFn):
    """Valid record batch -> Table of standardized float32 features + passthrough columns."""

    def __init__(self, transform_dir: str, n_features: int):
        self._transform_dir, self._d = transform_dir, n_features
        self._standardize = None

    def process(self, batch: pa.RecordBatch, ready):
        del ready  # only orders this step after the transform is written
        if self._standardize is None:
            self._standardize = Standardizer(self._transform_dir, self._d)
        x = features_to_matrix(batch.column(FEATURES_COLUMN), self._d, np.float64)
        z = self._standardize(x)
        yield pa.Table.from_batches([pa.RecordBatch.from_arrays(
            [matrix_to_features(z)] + batch.columns[1:],
            schema=_shard_schema(pa.schema(list(batch.schema)[1:])))])


def _hashed_rows(batch: pa.RecordBatch, n_features: int, seed: int):
    x = features_to_matrix(batch.column(FEATURES_COLUMN), n_features, np.float64)
    return row_hashes(x, seed), x


def _initial_state(sample, spec: FitSpec, transform_dir: str, ready) -> RoundState:
    """The bottom-m sample -> RoundState with the initial centroids (standardized space)."""
    del ready
    n = len(sample.rows)
    if n == 0:
        raise UserInputError(f"no valid rows in {spec.input}: every row was rejected "
                             f"(see {FileSystems.join(spec.output, 'rejected')})")
    if n < spec.k:
        raise UserInputError(f"--k {spec.k} is larger than the number of valid rows ({n})")
    # float32 like the shards, so the init sees the rows as the rounds do.
    standardized = Standardizer(transform_dir, len(spec.features))(sample.rows).astype(np.float64)
    centroids = initial_centroids(standardized, spec.k, spec.init, spec.seed, spec.init_centroids)
    return RoundState(centroids=centroids)
