"""Writers of the job outputs: rejected/, assignments/, centroids, metrics, and publishing them.

Everything goes through Beam's FileSystems, so OUTPUT may be local or gs://.
Every writer writes under the run's own directory (`RunOutput.stage`);
`Publish`, the job's last step, puts it in place of OUTPUT (pipeline.outputs.run_output).
The files written by `write_results` are rewritten whole if a runner retries
the step: the same bytes land at the same paths (but for report.html's duration,
measured when the report is written).
"""

import io
import json
from typing import List, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from apache_beam.io.filesystems import FileSystems

from pipeline.outputs import metrics, report, run_output
from pipeline.outputs.run_output import RunOutput
from transforms.beam import job_metrics
from transforms.beam.kmeans import reported_centroids
from transforms.core.centroids import Centroids
from transforms.core.lloyd import RoundState
from transforms.core.partials import Partials
from transforms.core.sampling import Sample
from transforms.core.selection import Selection
from transforms.core.statistics import ClusterStats
from transforms.step.preprocessing import Standardizer


class WriteRejected(beam.PTransform):
    """JSON lines -> OUTPUT/rejected/rejected-SSSSS-of-NNNNN.jsonl; returns the file names."""

    def __init__(self, output: str):
        super().__init__()
        self._prefix = FileSystems.join(output, "rejected", "rejected")

    def expand(self, lines):
        return lines | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")


# The type of each per-row output column (transforms.step.export.OUTPUT_ORDER).
OUTPUT_TYPES = {
    "cluster_id": pa.int64(),
    "distance": pa.float32(),
    "normalized_distance": pa.float32(),
    "merged_cluster_id": pa.int64(),
    "is_anomaly": pa.bool_(),
    "nearest_cluster_ids": pa.list_(pa.int64()),
    "nearest_distances": pa.list_(pa.float32()),
}

# A list column in a CSV cell: its values joined by this (`"3;1;4"`), one text
# field to any CSV reader (a comma would need quoting rules), split(";") in code.
CSV_LIST_SEPARATOR = ";"


def assignments_schema(passthrough: pa.Schema, outputs: Sequence[str]) -> pa.Schema:
    """The passthrough columns, then the per-row `outputs` (names, in their order)."""
    return pa.schema(list(passthrough) + [pa.field(name, OUTPUT_TYPES[name]) for name in outputs])


def _csv_block(batch: pa.RecordBatch) -> str:
    """A record batch as CSV lines without header or final newline (WriteToText adds it);
    a list column's values joined by CSV_LIST_SEPARATOR (Arrow's CSV writer takes no lists)."""
    batch = _lists_as_text(batch)
    buffer = io.BytesIO()
    pacsv.write_csv(batch, buffer, write_options=pacsv.WriteOptions(include_header=False))
    return buffer.getvalue().decode("utf-8").rstrip("\n")


def _lists_as_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with each list column as a string column: the values joined by
    CSV_LIST_SEPARATOR, each as Arrow casts it to text (a float32 in its shortest form)."""
    import pyarrow.compute as pc

    columns = []
    for column in batch.columns:
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            text = column.cast(pa.list_(pa.string()))
            column = pc.binary_join(text, CSV_LIST_SEPARATOR)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


class WriteAssignments(beam.PTransform):
    """Record batches -> OUTPUT/assignments/ (CSV for CSV input, else Parquet); returns file names.

    The nearest centroids (top_n) are list columns in Parquet, and in CSV a text
    cell of the values joined by CSV_LIST_SEPARATOR, nearest first: `3;1;4`."""

    def __init__(self, output: str, fmt: str, passthrough: pa.Schema, outputs: Sequence[str]):
        super().__init__()
        self._prefix = FileSystems.join(output, "assignments", "part")
        self._csv = fmt == "csv"
        self._schema = assignments_schema(passthrough, outputs)

    def expand(self, batches):
        if self._csv:
            return (
                batches
                | "ToCsv" >> beam.Map(_csv_block)
                | "Write"
                >> beam.io.WriteToText(
                    self._prefix, file_name_suffix=".csv", header=",".join(self._schema.names)
                )
            )
        return (
            batches
            | "ToTable" >> beam.Map(lambda b: pa.Table.from_batches([b]))
            | "Write"
            >> beam.io.WriteToParquetBatched(
                self._prefix, schema=self._schema, file_name_suffix=".parquet"
            )
        )


class Publish(beam.PTransform):
    """PBegin -> OUTPUT (one str), once every PCollection in `after` is complete.

    `after` names the PCollections of the run's writers (file names, results):
    the publish step takes them as side inputs, so it runs after all of them.
    """

    def __init__(self, run: RunOutput, **after: beam.PCollection):
        super().__init__()
        self._run, self._after = run, after

    def expand(self, pbegin):
        after = {name: beam.pvalue.AsList(pcoll) for name, pcoll in self._after.items()}
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "Publish" >> beam.Map(run_output.publish, run=self._run, **after)
        )


def write_json(path: str, value: dict) -> None:
    _write_bytes(path, json.dumps(value, indent=2).encode("utf-8"))


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


def write_results(
    state: RoundState,
    selection: Selection,
    partials: Partials,
    statistics: ClusterStats,
    counts: np.ndarray,
    sample: Sample,
    spec,
    run: RunOutput,
    rejections: Optional[dict] = None,
) -> dict:
    """Write centroids.npy, centroids.csv, metrics.json, hierarchy.json (with a merge)
    and report.html under the run's stage; return the metrics.

    `state` is the chosen fit (after any merge), `selection` what it was chosen
    from (restarts, sweep). `partials` are those of the final assignment pass,
    `statistics` its cluster statistics (radii, normalized distances). `counts`
    are ReadValidRows' counts, `sample` the bounded init sample (raw rows),
    drawn in the report. `spec` is the job's FitSpec. `rejections` is ReadValidRows'
    rejection summary (the rejected rows by reason and by file).
    """
    out = run.stage
    layout = spec.layout
    standardizer = Standardizer(
        FileSystems.join(out, "transform_fn"), len(layout.numeric), len(layout.categorical)
    )
    reported = reported_centroids(state.centroids, standardizer, layout, spec.missing == "impute")
    write_centroids(out, state.centroids, reported)
    result = metrics.fit_metrics(state, selection, partials, statistics, counts, spec, run.run_id)
    if rejections is not None:
        result.update(metrics.rejection_metrics(rejections))
    write_json(FileSystems.join(out, "metrics.json"), result)
    if state.merge_map is not None:
        write_json(FileSystems.join(out, "hierarchy.json"), metrics.hierarchy(state, spec.merge_to))
    # The report draws the reported columns: those no training row fills are 0 in
    # every row and centroid, so distances and projections are the same without them.
    used = layout.used_columns(standardizer.vocabularies(), spec.missing == "impute")
    write_fit_report(
        out,
        result,
        state._replace(centroids=np.asarray(state.centroids)[:, used]),
        reported.original,
        reported.features,
        standardizer(sample.rows, sample.categories)[:, used],
        provenance=fit_provenance(spec, rejections),
        statistics=statistics,
    )
    job_metrics.record_time(job_metrics.RESULTS_WRITTEN_MS)
    return result


def write_centroids(out: str, centroids: np.ndarray, reported: Centroids) -> None:
    """Write centroids.npy (float32 [K, D], the space the fit ran in: what the model holds)
    and centroids.csv (cluster_id, then each reported column in original units: a
    numeric feature's value, a category's share FEATURE=VALUE; `reported`)."""
    buffer = io.BytesIO()
    np.save(buffer, centroids.astype(np.float32), allow_pickle=False)
    _write_bytes(FileSystems.join(out, "centroids.npy"), buffer.getvalue())

    original, features = reported.original, reported.features
    table = pa.table(
        [pa.array(np.arange(len(centroids), dtype=np.int64))]
        + [pa.array(original[:, j]) for j in range(original.shape[1])],
        names=["cluster_id"] + list(features),
    )
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    _write_bytes(FileSystems.join(out, "centroids.csv"), buffer.getvalue())


def write_fit_report(
    out: str,
    result: dict,
    state: RoundState,
    original: np.ndarray,
    features: List[str],
    z: np.ndarray,
    provenance: Optional[dict] = None,
    statistics: Optional[ClusterStats] = None,
) -> None:
    """Write report.html: `result` (the metrics), the centroids in original units
    (float64 [K, D]) and the init sample standardized (`z`, [m, D]), drawn by cluster;
    with a merge (state.merge_map) coloured by merged group; `provenance` as
    `fit_provenance` gives it; `statistics` the final pass's (radii, normalized
    distances)."""
    from sklearn.metrics import pairwise_distances_argmin

    z = z.astype(np.float64)
    labels = pairwise_distances_argmin(z, state.centroids)  # chunked: bounded memory
    report.write_report(
        FileSystems.join(out, "report.html"),
        report.render_report(
            result,
            original,
            list(features),
            z,
            labels.astype(np.int64),
            state.centroids,
            sweep=result.get("sweep"),
            linkage=state.linkage,
            merge_map=state.merge_map,
            provenance=provenance,
            distances=None
            if statistics is None
            else {
                "tail": statistics.tail.tolist(),
                "tail_quantiles": statistics.tail_quantiles.tolist(),
                "threshold": result.get("anomaly_threshold"),
            },
        ),
    )


def fit_provenance(spec, rejections: Optional[dict] = None) -> Optional[dict]:
    """The report's provenance: the driver's record (spec.provenance: command, version,
    runner, started as ISO 8601 UTC and as seconds since the epoch), with the input
    pattern, the number of files (as matched by the driver; a template's as read, from
    `rejections`), and the duration from the driver's start to now, the report step
    (the job's last steps, writing and publishing, come after it; a template's has no
    duration, its driver's start being the template's). None without a record."""
    import time

    record = getattr(spec, "provenance", None)
    if not record:
        return None
    result = {key: value for key, value in record.items() if key != "started_epoch"}
    result.update(input=spec.input, files=len(spec.files))
    if spec.match_when_run:
        # A template: its driver built it, maybe long before this run; the run's
        # own start is not known here.
        result["template built"] = result.pop("started", None)
        result["files"] = rejections.get("files") if rejections else None
    elif "started_epoch" in record:
        result["duration_seconds"] = time.time() - record["started_epoch"]
    return result
