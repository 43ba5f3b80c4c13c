"""The `score` job: apply a fitted model to new data, with the fit's validation and dead letter."""

import posixpath
from typing import List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipeline.io.ingest import ReadValidRows
from pipeline.io.layout import input_layout
from pipeline.options import (
    AnomalyOptions,
    InputOptions,
    KMeansOptions,
    OutputOptions,
    ScoreOptions,
)
from pipeline.outputs import writers
from pipeline.outputs.drift import DriftCombineFn, batch_totals, drift_metrics
from pipeline.outputs.metrics import counts_metrics, rejection_metrics
from pipeline.outputs.report import write_report
from pipeline.outputs.run_output import MARKER, RunOutput
from pipeline.outputs.score_report import render_score_report
from pipeline.workdir import absolute_path, is_template_run
from transforms.beam.assign import AssignClusters, describe_model, training_statistics
from transforms.beam.model_paths import model_base, resolve_model_dir
from transforms.core import parameters
from transforms.core.errors import UserInputError
from transforms.core.statistics import anomaly_threshold


class ScoreSpec(NamedTuple):
    input: str
    files: Tuple[str, ...]  # the files `input` matched when the graph was built, sorted
    match_when_run: bool  # a template: `input` is matched again when it runs
    format: str
    features: List[str]
    passthrough: pa.Schema
    on_invalid: str
    model_dir: str  # the version directory (OUTPUT/model/1)
    output: str
    batch_size: int
    outputs: Tuple[str, ...]  # the per-row outputs, in their column order
    contamination: Optional[float]  # --contamination: overrides the model's
    top_n: int  # nearest centroids per row (0: none)
    training: Optional[dict]  # assign.training_statistics: what drift compares with
    needs_directions: bool = False  # see FitSpec.needs_directions; the model serves any row
    missing: str = "reject"  # the model's: "impute" reads a missing value as one to impute
    # The driver's record for the report (fit.driver_provenance), or None.
    provenance: Optional[dict] = None
    # The model's categorical features (the last of `features`), read as text.
    categorical: Tuple[str, ...] = ()


def finished_model_dir(path: str) -> str:
    """The SavedModel version directory that `--model PATH` names, once its fit has finished.

    PATH is a fit's output directory (its `_SUCCESS` must be there), the model
    base path in one (OUTPUT/model: its highest numbered version, as TF Serving
    picks) or a version directory (OUTPUT/model/1); a model copied elsewhere
    (a base path or a version directory) is taken as it is.
    """
    path = path.rstrip("/") or path
    try:
        model_dir = resolve_model_dir(path)
    except UserInputError as e:
        raise UserInputError(f"--model {e}") from None
    # The fit output that holds it, if any: OUTPUT/model/1 -> OUTPUT (or OUTPUT/model -> OUTPUT).
    fit_output = posixpath.dirname(model_base(model_dir))
    if not FileSystems.exists(FileSystems.join(fit_output, "metrics.json")):
        fit_output = None  # a model copied out of its fit's output
    if fit_output is not None and not FileSystems.exists(FileSystems.join(fit_output, MARKER)):
        raise UserInputError(
            f"--model {path}: {fit_output} has no {MARKER} marker: the fit "
            f"that wrote it did not finish (or is still running)"
        )
    if not FileSystems.exists(FileSystems.join(model_dir, "variables", "variables.index")):
        raise UserInputError(
            f"--model {path}: the SavedModel in {model_dir} has no variables/ (an incomplete copy?)"
        )
    return model_dir


def model_description(model_dir: str, contamination: Optional[float], top_n: int):
    """What `score` and `stream` need of the model (assign.describe_model: its features,
    per-row outputs, missing values' rule and categorical features); a model that
    cannot be loaded, or a --top_n beyond its K, is a UserInputError."""
    try:
        return describe_model(model_dir, contamination, top_n)
    except Exception as e:  # noqa: BLE001 -- any load failure is the model's, named below
        if isinstance(e, ValueError) and str(e).startswith("top_n "):  # the flag's, not the model's
            raise UserInputError(f"--{e}") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(
            f"--model {model_dir} cannot be loaded as a shardmeans model: {first}"
        ) from None


def score_spec(options) -> ScoreSpec:
    """Validate the score options against the model and the first input file."""
    inp, out, km = (
        options.view_as(InputOptions),
        options.view_as(OutputOptions),
        options.view_as(KMeansOptions),
    )
    model = options.view_as(ScoreOptions).model
    for flag, value in (("--model", model), ("--input", inp.input), ("--output", out.output)):
        if value is None:
            raise UserInputError(f"{flag} is required")
    if inp.weight_column is not None:
        raise UserInputError(
            "--weight_column is fit's: score assigns each row its nearest centroid, "
            "which a weight does not change"
        )
    model_dir = finished_model_dir(absolute_path(model))
    contamination = options.view_as(AnomalyOptions).contamination
    parameters.BY_NAME["contamination"].check(contamination, "--")
    top_n = out.top_n
    parameters.BY_NAME["top_n"].check(top_n, "--")
    description = model_description(model_dir, contamination, top_n)
    features, outputs, missing = description
    categorical = tuple(description.categorical)
    layout = input_layout(inp.input, inp.format, inp.id_column, inp.on_invalid)
    return ScoreSpec(
        absolute_path(inp.input),
        tuple(layout.files),
        is_template_run(options),
        layout.format,
        list(features) + list(categorical),
        layout.passthrough,
        inp.on_invalid,
        absolute_path(model_dir),
        absolute_path(out.output),
        km.batch_size,
        tuple(outputs),
        contamination,
        top_n,
        training_statistics(model_dir),
        missing=missing,
        categorical=categorical,
    )


def build_score_pipeline(pipeline: beam.Pipeline, spec: ScoreSpec, run: RunOutput) -> None:
    """Add the score job to `pipeline` (runs nothing): read and validate, assign, write under
    the run's stage, publish to `spec.output` once all are written."""
    rows = pipeline | "Read" >> ReadValidRows.of_job(spec)
    rejected = rows["rejected"] | "WriteRejected" >> writers.WriteRejected(run.stage)
    scored = rows["valid"] | "AssignClusters" >> AssignClusters(
        spec.model_dir, contamination=spec.contamination, top_n=spec.top_n
    )
    assigned = scored | "WriteAssignments" >> writers.WriteAssignments(
        run.stage, spec.format, spec.passthrough, spec.outputs
    )
    drift = {}
    if spec.training is not None:
        k = len(spec.training["sizes"])
        drift["drift"] = beam.pvalue.AsSingleton(
            scored
            | "DriftTotals" >> beam.Map(batch_totals, k=k)
            | "SumDrift" >> beam.CombineGlobally(DriftCombineFn(k))
        )
    results = rows["counts"] | "WriteMetrics" >> beam.Map(
        _write_results,
        spec=spec,
        run=run,
        rejections=beam.pvalue.AsSingleton(rows["rejections"]),
        **drift,
    )
    _ = pipeline | "Publish" >> writers.Publish(
        run, rejected=rejected, assignments=assigned, results=results
    )


def _write_results(
    counts: np.ndarray,
    spec: ScoreSpec,
    run: RunOutput,
    rejections: Optional[dict] = None,
    drift: Optional[list] = None,
) -> dict:
    """Write metrics.json and report.html under the run's stage; return the metrics.

    `counts` and `rejections` are ReadValidRows'; `drift` the scored rows' totals
    (drift.DriftCombineFn: cluster counts, anomalies, a sketch of the normalized
    distances), None for a model that keeps no training statistics."""
    metrics = {
        "run_id": run.run_id,
        "model": spec.model_dir,
        "features": spec.features,
        **counts_metrics(counts, spec.features, spec.missing),
    }
    if rejections is not None:
        metrics.update(rejection_metrics(rejections))
    distances = None
    if drift is not None:
        contamination = spec.contamination
        if contamination is None:
            contamination = spec.training["contamination"]
        metrics["drift"] = drift_metrics(drift, spec.training, contamination)
        tail = spec.training["tail"]
        distances = {
            "tail": tail.tolist(),
            "training": spec.training["tail_quantiles"].tolist(),
            # The scored rows' distribution at the training table's fractions.
            "scored": drift[2].tail_quantiles(tail).tolist() if int(drift[0].sum()) else None,
            "threshold": None
            if contamination is None
            else anomaly_threshold(tail, spec.training["tail_quantiles"], contamination),
        }
    writers.write_json(FileSystems.join(run.stage, "metrics.json"), metrics)
    write_report(
        FileSystems.join(run.stage, "report.html"),
        render_score_report(metrics, score_provenance(spec, run), distances),
    )
    return metrics


def score_provenance(spec: ScoreSpec, run: RunOutput) -> dict:
    """The report's provenance: the driver's record (fit.driver_provenance, if any),
    the model, the input pattern and its files, the run id, the duration from the
    driver's start to the report."""
    import time

    record = dict(spec.provenance or {})
    started = record.pop("started_epoch", None)
    record.update(model=spec.model_dir, input=spec.input, files=len(spec.files))
    if spec.match_when_run:  # a template: the files are matched when it runs
        record.pop("files")
    elif started is not None:
        record["duration_seconds"] = time.time() - started
    record["run id"] = run.run_id
    return record
