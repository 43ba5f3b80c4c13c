"""The `score` job: apply a fitted model to new data, with the fit's validation and dead letter."""
import json
from typing import List, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipeline import outputs
from pipeline.ingest import ReadValidRows
from pipeline.options import InputOptions, KMeansOptions, OutputOptions, ScoreOptions
from pipeline.readers import input_layout
from pipeline.workdir import absolute_path
from transforms.assign import AssignClusters, describe_model
from transforms.errors import UserInputError


class ScoreSpec(NamedTuple):
    input: str
    format: str
    features: List[str]
    passthrough: pa.Schema
    on_invalid: str
    model_dir: str
    output: str
    batch_size: int
    merged: bool  # the model outputs merged_cluster_id


def _model_dir(path: str) -> str:
    for candidate in (FileSystems.join(path, "model"), path):
        if FileSystems.exists(FileSystems.join(candidate, "saved_model.pb")):
            return candidate
    raise UserInputError(f"--model {path}: no SavedModel there nor in {path}/model "
                         f"(pass a fit output directory)")


def score_spec(options) -> ScoreSpec:
    """Validate the score options against the model and the first input file."""
    inp, out, km = options.view_as(InputOptions), options.view_as(OutputOptions), options.view_as(KMeansOptions)
    model = options.view_as(ScoreOptions).model
    for flag, value in (("--model", model), ("--input", inp.input), ("--output", out.output)):
        if value is None:
            raise UserInputError(f"{flag} is required")
    model_dir = _model_dir(model)
    features, merged = describe_model(model_dir)
    layout = input_layout(inp.input, inp.format, inp.id_column)
    return ScoreSpec(absolute_path(inp.input), layout.format, features, layout.passthrough,
                     inp.on_invalid,
                     absolute_path(model_dir), absolute_path(out.output), km.batch_size, merged)


def build_score_pipeline(pipeline: beam.Pipeline, spec: ScoreSpec) -> None:
    """Add the score job to `pipeline` (runs nothing): read and validate, assign, write."""
    rows = pipeline | "Read" >> ReadValidRows(spec.input, spec.format, spec.features,
                                              spec.passthrough, spec.on_invalid, spec.batch_size)
    _ = rows["rejected"] | "WriteRejected" >> outputs.WriteRejected(spec.output)
    _ = (rows["valid"]
         | "AssignClusters" >> AssignClusters(spec.model_dir)
         | "WriteAssignments" >> outputs.WriteAssignments(spec.output, spec.format, spec.passthrough,
                                                         merged=spec.merged))
    _ = rows["counts"] | "WriteMetrics" >> beam.Map(_write_metrics, spec=spec)


def _write_metrics(counts: np.ndarray, spec: ScoreSpec) -> None:
    metrics = {"model": spec.model_dir, "features": spec.features, "rows_read": int(counts[0]),
               "rows_valid": int(counts[1]), "rows_rejected": int(counts[2])}
    with FileSystems.create(FileSystems.join(spec.output, "metrics.json")) as f:
        f.write(json.dumps(metrics, indent=2).encode("utf-8"))
