"""The `fit` job: its validated specification, and the function that builds (not runs) its graph."""

import logging
import posixpath
from typing import List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions

from pipeline.io.ingest import ReadValidRows
from pipeline.io.layout import input_layout
from pipeline.io.readers import is_list as is_list_type
from pipeline.options import AnomalyOptions, InputOptions, KMeansOptions, OutputOptions
from pipeline.outputs import writers
from pipeline.outputs.run_output import RunOutput
from pipeline.workdir import absolute_path, is_template_run
from transforms.beam.kmeans import KMeans
from transforms.beam.warm_start import WarmStart
from transforms.core import parameters, vectors
from transforms.core.categorical import Layout
from transforms.core.errors import UserInputError
from transforms.step.export import NEAREST_CLUSTER_IDS, NEAREST_DISTANCES


class FitSpec(NamedTuple):
    """Everything the fit graph needs, checked against the options and the first input file."""

    input: str
    files: Tuple[str, ...]  # the files `input` matched when the graph was built, sorted
    match_when_run: bool  # a template: `input` is matched again when it runs
    format: str
    features: List[str]
    passthrough: pa.Schema  # columns copied to the assignments, as read
    id_column: Optional[str]
    on_invalid: str
    output: str  # where the results are published (the run writes under its own stage first)
    temp_location: Optional[str]  # the work directory's parent, else the run's stage
    keep_standardized: bool
    top_n: int  # nearest centroids per row in the assignments (0: none)
    ks: Tuple[int, ...]  # one K, or the Ks of a sweep (ascending)
    n_init: int
    restarts_on: str  # "sample" or "all"
    select: str
    seed: int
    init_seed: Optional[int]
    max_rounds: int
    tol: float
    init: str  # "k-means++", "random" or "given"
    init_path: Optional[str]  # the .npy of given centroids
    init_centroids: Optional[np.ndarray]  # float64 [K, D] when init == "given"
    # --init_model: the model read and checked against this fit (init is then "given")
    init_model: Optional[WarmStart]
    standardize: str  # "z_score" or "none"
    distance: str  # "euclidean" or "cosine"
    missing: str  # "reject" or "impute"
    contamination: Optional[float]  # the model's default fraction of anomalies
    init_sample_size: int
    init_refine_rounds: int
    merge_to: Optional[int]
    batch_size: int
    cache_mb: Optional[int]  # None: KMeans's default, a quarter of RAM
    devices: str
    # The driver's record for the report (`driver_provenance`), or None.
    provenance: Optional[dict] = None
    weight_column: Optional[str] = None  # sample weights (docs/weights.md), else None
    # The features that are categories (in `features` order; core.categorical), and
    # the values each keeps a column for, at most.
    categorical: Tuple[str, ...] = ()
    max_categories: int = 100

    @property
    def layout(self) -> Layout:
        """The numeric and categorical features, and the columns of the space the fit runs in."""
        return Layout.of(self.features, self.categorical, self.max_categories)

    @property
    def needs_directions(self) -> bool:
        """Rows must have a direction: cosine distance on features as read (z-scored
        rows are centred, and only a row exactly at the mean has none)."""
        return self.distance == "cosine" and self.standardize == "none"


def fit_spec(options) -> FitSpec:
    """Validate the fit options against the input; UserInputError names what is wrong."""
    inp, km, out = (options.view_as(c) for c in (InputOptions, KMeansOptions, OutputOptions))
    for flag, value in (("--input", inp.input), ("--output", out.output)):
        if value is None:
            raise UserInputError(f"{flag} is required")
    ks = parameters.parse_ks(km.k, prefix="--")
    values = {p.name: getattr(km, p.name) for p in parameters.FIT if p.name != "k"}
    parameters.check_fit(ks, dict(values, top_n=out.top_n), prefix="--")
    anomaly = options.view_as(AnomalyOptions)
    parameters.BY_NAME["contamination"].check(anomaly.contamination, "--")

    layout = input_layout(inp.input, inp.format, inp.id_column, inp.on_invalid)
    _check_weight_column(inp.weight_column, layout, inp.features)
    # A weight is no feature, nor a default one.
    numeric = [n for n in layout.numeric if n != inp.weight_column]
    features = _features(inp.features, layout._replace(numeric=numeric), inp.id_column)
    categorical = _categorical(features, km.categorical, layout)
    _log_columns(layout, features, inp.features, inp.id_column)
    width = Layout.of(features, categorical, km.max_categories).width

    warm = _init_model(km, ks, features)
    if warm is not None:
        init, given = "given", None
    else:
        init, given = _init(km.init, ks, km.n_init or 1, width)
    n_init = parameters.resolve_n_init(km.n_init, given=init == "given")
    temp_location = options.view_as(GoogleCloudOptions).temp_location
    return FitSpec(
        input=absolute_path(inp.input),
        files=tuple(layout.files),
        match_when_run=is_template_run(options),
        format=layout.format,
        features=features,
        passthrough=layout.passthrough,
        id_column=inp.id_column,
        on_invalid=inp.on_invalid,
        output=absolute_path(out.output),
        temp_location=absolute_path(temp_location) if temp_location else None,
        keep_standardized=out.keep_standardized,
        top_n=out.top_n,
        ks=ks,
        n_init=n_init,
        restarts_on=km.restarts_on,
        select=km.select,
        seed=km.seed,
        init_seed=km.init_seed,
        max_rounds=km.max_rounds,
        tol=km.tol,
        init=init,
        init_path=absolute_path(km.init) if given is not None else None,
        init_centroids=given,
        init_model=warm,
        standardize=km.standardize,
        distance=km.distance,
        missing=km.missing,
        contamination=anomaly.contamination,
        init_sample_size=km.init_sample_size,
        init_refine_rounds=km.init_refine_rounds,
        merge_to=km.merge_to,
        batch_size=km.batch_size,
        cache_mb=km.cache_mb,
        devices=km.devices,
        weight_column=inp.weight_column,
        categorical=categorical,
        max_categories=km.max_categories,
    )


def _check_weight_column(name: Optional[str], layout, requested: Optional[str]) -> None:
    """--weight_column names a numeric column of the input that --features (the flag's
    text, if given) does not name."""
    if name is None:
        return
    features = [f.strip() for f in (requested or "").split(",")]
    if name not in layout.schema.names:
        raise UserInputError(
            f"--weight_column {name!r} is not a column of {layout.path} "
            f"(columns: {', '.join(layout.schema.names)})"
        )
    if name in features:
        raise UserInputError(f"--weight_column {name!r} is also a feature: a weight is not one")
    if name not in layout.numeric:
        raise UserInputError(
            f"--weight_column {name!r} of {layout.path} is not numeric "
            f"(type {layout.schema.field(name).type})"
        )


def driver_provenance(argv: List[str], options, started: float) -> dict:
    """What the report says of where a fit came from, as the driver knows it:
    {"command": str (the command line, shell-quoted), "version": str (shardmeans'),
    "runner": str, "started": str (ISO 8601, UTC), "started_epoch": float (seconds)}.
    `argv`: the command's arguments after the program name; `started`: time.time() when
    the driver began."""
    import datetime
    import shlex
    from importlib.metadata import PackageNotFoundError, version

    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    try:
        installed = version("shardmeans")
    except PackageNotFoundError:  # a source tree that is not installed
        installed = "unknown (not installed)"
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner"):
        direct = options.view_as(DirectOptions)
        mode = direct.direct_running_mode or "in_memory"
        workers = direct.direct_num_workers or 1
        runner = (
            f"DirectRunner (Beam's FnApiRunner, {mode}, {workers} worker{'s' * (workers != 1)})"
        )
    stamp = datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
    return {
        "command": "shardmeans " + shlex.join(argv),
        "version": installed,
        "runner": str(runner),
        "started": stamp.isoformat(timespec="seconds"),
        "started_epoch": started,
    }


def _features(requested, layout, id_column) -> List[str]:
    """The features to cluster on: `requested` (the --features text), else every column of
    `layout.numeric` but `id_column`. `layout` holds the columns of all input files
    (io.layout.input_layout).

    A column named explicitly may also be a list of numbers: a vector (embedding)
    column of width L, the length of its first list in the input (a Parquet
    fixed_size_list's own), is the L features NAME[0]..NAME[L-1]
    (transforms.core.vectors); rows whose list has another length are rejected.
    Width 1 (a tf.Example feature with one value in most rows) is one feature
    under the column's name. Such a column is never a default.
    """
    from pipeline.io.layout import column_conflict

    schema, numeric, path = layout.schema, layout.numeric, layout.path
    if requested is None:
        features = [n for n in numeric if n != id_column]
        if not features:
            raise UserInputError(
                f"no numeric column to cluster on in {path} "
                f"(columns: {', '.join(schema.names)}); pass --features"
            )
        return features
    features = [f.strip() for f in requested.split(",") if f.strip()]
    if not features:
        raise UserInputError("--features is empty")
    if len(set(features)) != len(features):
        raise UserInputError(f"--features names a column twice: {requested!r}")
    columns = []
    for name in features:
        if name not in schema.names:
            raise UserInputError(
                f"unknown feature {name!r}: not a column of {path} "
                f"(columns: {', '.join(schema.names)})"
            )
        field = schema.field(name)
        if column_conflict(field):
            raise UserInputError(f"feature {name!r}: {column_conflict(field)}")
        kind = field.type
        numbers_list = (
            pa.types.is_list(kind)
            or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)
        ) and (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type))
        if name not in numeric and not numbers_list and not _is_categorical_type(kind):
            raise UserInputError(
                f"feature {name!r} of {path} is neither numbers nor text (type {field.type})"
            )
        width = _vector_width(name, kind, layout) if numbers_list else None
        columns.append((name, width if width and width > 1 else None))
    return vectors.expand(columns)


def _is_categorical_type(kind: pa.DataType) -> bool:
    """Text, bytes or booleans: a category (a tf.Example bytes_list too)."""
    if is_list_type(kind):
        kind = kind.value_type
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_boolean(kind)
    )


def _categorical(features: List[str], requested: Optional[str], layout) -> Tuple[str, ...]:
    """The features that are categories, in `features` order: those --categorical names
    (`requested`, comma-separated), and every text or boolean feature."""
    named = [f.strip() for f in (requested or "").split(",") if f.strip()]
    unknown = [name for name in named if name not in features]
    if unknown:
        raise UserInputError(
            f"--categorical names {', '.join(map(repr, unknown))}, not among the features "
            f"({', '.join(features)})"
        )
    schema = layout.schema
    return tuple(
        name
        for name in features
        if name in named
        or (
            name in schema.names
            and name not in layout.numeric
            and _is_categorical_type(schema.field(name).type)
        )
    )


def _vector_width(name: str, kind: pa.DataType, layout) -> int:
    """A list column's width: a fixed_size_list's size, else the length of the first
    list in the input (the files in order, the first rows of each that has one)."""
    from pipeline.io import columns

    if pa.types.is_fixed_size_list(kind):
        return kind.list_size
    for path in layout.files:
        values = columns.first_rows(path, layout.format, [name]).get(name)
        if values is None or not is_list_type(values.type):
            continue
        lengths = pc.drop_null(pc.list_value_length(values))
        if len(lengths):
            return int(lengths[0].as_py())
    raise UserInputError(f"feature {name!r}: no row of {layout.path} holds a list of numbers")


def _log_columns(layout, features: List[str], requested, id_column) -> None:
    """Without --features: log the features chosen and why each other column is not one,
    and, without --id_column, warn about the features that look like identifiers."""
    from pipeline.io import columns

    if requested is not None:  # chosen by name: nothing was decided here
        return
    unused = columns.unused_columns(
        layout.schema, layout.numeric, features, id_column, layout.format
    )
    logging.getLogger(__name__).info(columns.columns_line(features, unused))
    if id_column is not None:
        return
    sample = columns.first_rows(layout.files[0], layout.format, features)
    flagged = columns.identifier_like(features, sample)
    for name, why in flagged:
        logging.getLogger(__name__).warning(
            columns.identifier_warning(name, why, features, [n for n, _ in flagged])
        )


def _init(init: str, ks: Tuple[int, ...], n_init: int, d: int):
    """--init (checked: a method or a .npy path) -> (method, None) or ("given", float64 [K, D])."""
    if init in parameters.INIT_METHODS:
        return init, None
    if len(ks) > 1 or n_init > 1:
        raise UserInputError(
            f"--init {init} is one start for one K: it takes neither a --k "
            f"list nor --n_init above 1"
        )
    k = ks[0]
    try:
        with FileSystems.open(init) as f:
            given = np.load(f, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 -- any failure to read it is the file's
        raise UserInputError(f"cannot read --init {init}: {e}") from None
    if given.shape != (k, d) or not np.all(np.isfinite(given)):
        raise UserInputError(
            f"--init {init} holds an array of shape {given.shape}; expected "
            f"finite [{k}, {d}] (k, number of features)"
        )
    return "given", given.astype(np.float64)


def _init_model(km, ks: Tuple[int, ...], features: List[str]) -> Optional[WarmStart]:
    """--init_model, read and checked against the fit's other flags, or None.

    It is the fit's one start: exclusive with --init and with several Ks or restarts.
    A model in a fit output is taken once that fit has finished (its marker is there).
    """
    from pipeline.outputs.run_output import MARKER
    from transforms.beam import warm_start
    from transforms.beam.model_paths import model_base

    if km.init_model is None:
        return None
    flag = f"--init_model {km.init_model}"
    if km.init != parameters.BY_NAME["init"].default:
        raise UserInputError(f"{flag} gives the initial centroids: it takes no --init {km.init}")
    if len(ks) > 1 or (km.n_init or 1) > 1:
        got = f"--k {','.join(map(str, ks))}" if len(ks) > 1 else f"--n_init {km.n_init}"
        raise UserInputError(
            f"{flag} is one start for one K: it takes neither a --k list nor --n_init "
            f"above 1, got {got}"
        )
    warm = warm_start.read_model(absolute_path(km.init_model), "--init_model")
    fit_output = posixpath.dirname(model_base(warm.model_dir))
    if FileSystems.exists(FileSystems.join(fit_output, "metrics.json")) and not (
        FileSystems.exists(FileSystems.join(fit_output, MARKER))
    ):
        raise UserInputError(
            f"{flag}: {fit_output} has no {MARKER} marker: the fit that wrote it did not "
            f"finish (or is still running)"
        )
    warm_start.check_matches(warm, features, ks[0], km.standardize, km.distance, "--init_model")
    return warm


def work_dir(spec: FitSpec, run: RunOutput) -> str:
    """The run's scratch directory (the shards): under --temp_location, else in the run's stage."""
    if spec.temp_location:
        return f"{spec.temp_location.rstrip('/')}/shardmeans-{run.run_id}"
    return FileSystems.join(run.stage, "_work")


def _kmeans_init(spec: FitSpec):
    """KMeans' `init`: the method, the given centroids, or its default with init_model."""
    if spec.init_centroids is not None:
        return spec.init_centroids
    return parameters.BY_NAME["init"].default if spec.init_model is not None else spec.init


def build_fit_pipeline(pipeline: beam.Pipeline, spec: FitSpec, run: RunOutput) -> None:
    """Add the fit job to `pipeline` (runs nothing): read and validate, KMeans, write the
    outputs under the run's stage, publish them to `spec.output` once all are written."""
    rows = pipeline | "Read" >> ReadValidRows.of_job(spec)
    rejected = rows["rejected"] | "WriteRejected" >> writers.WriteRejected(run.stage)
    fitted = rows["valid"] | "KMeans" >> KMeans(
        spec.ks,
        spec.features,
        run.stage,
        max_rounds=spec.max_rounds,
        tol=spec.tol,
        n_init=spec.n_init,
        init_seed=spec.init_seed,
        restarts_on=spec.restarts_on,
        select=spec.select,
        init=_kmeans_init(spec),
        init_model=spec.init_model,
        seed=spec.seed,
        standardize=spec.standardize,
        distance=spec.distance,
        missing=spec.missing,
        contamination=spec.contamination,
        init_sample_size=spec.init_sample_size,
        init_refine_rounds=spec.init_refine_rounds,
        batch_size=spec.batch_size,
        cache_mb=spec.cache_mb,
        devices=spec.devices,
        passthrough=spec.passthrough,
        work_dir=work_dir(spec, run),
        keep_standardized=spec.keep_standardized,
        top_n=spec.top_n,
        merge_to=spec.merge_to,
        weight_column=spec.weight_column,
        categorical=spec.categorical,
        max_categories=spec.max_categories,
    )
    outputs = ["cluster_id", "distance", "normalized_distance"]
    outputs += ["merged_cluster_id"] if spec.merge_to is not None else []
    outputs += ["is_anomaly"] if spec.contamination is not None else []
    outputs += [NEAREST_CLUSTER_IDS, NEAREST_DISTANCES] if spec.top_n else []
    assigned = fitted["assignments"] | "WriteAssignments" >> writers.WriteAssignments(
        run.stage, spec.format, spec.passthrough, outputs
    )
    results = fitted["state"] | "WriteResults" >> beam.Map(
        writers.write_results,
        selection=beam.pvalue.AsSingleton(fitted["selection"]),
        partials=beam.pvalue.AsSingleton(fitted["final"]),
        statistics=beam.pvalue.AsSingleton(fitted["statistics"]),
        counts=beam.pvalue.AsSingleton(rows["counts"]),
        sample=beam.pvalue.AsSingleton(fitted["sample"]),
        spec=spec,
        run=run,
        rejections=beam.pvalue.AsSingleton(rows["rejections"]),
    )
    _ = pipeline | "Publish" >> writers.Publish(
        run, rejected=rejected, assignments=assigned, results=results, fitted=fitted["done"]
    )
