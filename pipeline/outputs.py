"""Writers of the fit outputs: rejected/, assignments/, centroids, metrics, and clean-up.

Everything goes through Beam's FileSystems, so OUTPUT may be local or gs://.
The files written by `write_results` are rewritten whole if a runner retries
the step: the same bytes land at the same paths.
"""
import io
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from apache_beam.io.filesystems import FileSystems

from pipeline import report
from transforms.lloyd import RoundState
from transforms.partials import Partials
from transforms.preprocessing import Standardizer
from transforms.select import Selection


class WriteRejected(beam.PTransform):
    """JSON lines -> OUTPUT/rejected/rejected-SSSSS-of-NNNNN.jsonl; returns the file names."""

    def __init__(self, output: str):
        super().__init__()
        self._prefix = FileSystems.join(output, "rejected", "rejected")

    def expand(self, lines):
        return lines | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")


def assignments_schema(passthrough: pa.Schema, merged: bool = False) -> pa.Schema:
    fields = list(passthrough) + [pa.field("cluster_id", pa.int64()),
                                  pa.field("distance", pa.float32())]
    if merged:
        fields.append(pa.field("merged_cluster_id", pa.int64()))
    return pa.schema(fields)


def _csv_block(batch: pa.RecordBatch) -> str:
    """A record batch as CSV lines without header or final newline (WriteToText adds it)."""
    buffer = io.BytesIO()
    pacsv.write_csv(batch, buffer, write_options=pacsv.WriteOptions(include_header=False))
    return buffer.getvalue().decode("utf-8").rstrip("\n")


class WriteAssignments(beam.PTransform):
    """Record batches -> OUTPUT/assignments/ (CSV for CSV input, else Parquet); returns file names."""

    def __init__(self, output: str, fmt: str, passthrough: pa.Schema, merged: bool = False):
        super().__init__()
        self._prefix = FileSystems.join(output, "assignments", "part")
        self._csv = fmt == "csv"
        self._schema = assignments_schema(passthrough, merged)

    def expand(self, batches):
        if self._csv:
            return (batches
                    | "ToCsv" >> beam.Map(_csv_block)
                    | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".csv",
                                                     header=",".join(self._schema.names)))
        return (batches
                | "ToTable" >> beam.Map(lambda b: pa.Table.from_batches([b]))
                | "Write" >> beam.io.WriteToParquetBatched(self._prefix, schema=self._schema,
                                                           file_name_suffix=".parquet"))


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


def write_results(state: RoundState, selection: Selection, partials: Partials,
                  counts: np.ndarray, sample, spec, transform_dir: str) -> dict:
    """Write centroids.npy, centroids.csv, metrics.json and report.html; return the metrics.

    `state` is the chosen fit (after any merge), `selection` what it was chosen
    from (restarts, sweep). `partials` are those of the final assignment pass:
    its counts are the cluster sizes and its inertia the final one (against
    the final centroids). `sample` is the bounded init sample (raw rows),
    drawn in the report.
    """
    k = len(state.centroids)
    centroids = state.centroids.astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, centroids, allow_pickle=False)
    _write_bytes(FileSystems.join(spec.output, "centroids.npy"), buffer.getvalue())

    standardizer = Standardizer(transform_dir, len(spec.features))
    mean, std = standardizer.mean_and_std()
    original = state.centroids * np.where(std > 0, std, 1.0) + mean
    table = pa.table([pa.array(np.arange(k, dtype=np.int64))]
                     + [pa.array(original[:, j]) for j in range(original.shape[1])],
                     names=["cluster_id"] + list(spec.features))
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    _write_bytes(FileSystems.join(spec.output, "centroids.csv"), buffer.getvalue())

    metrics = {
        "k": k,
        "features": list(spec.features),
        "rows_read": int(counts[0]),
        "rows_valid": int(counts[1]),
        "rows_rejected": int(counts[2]),
        "rounds": state.rounds,
        "converged": state.converged,
        "inertia": partials.inertia,
        "inertia_history": list(state.inertia_history),
        "cluster_sizes": partials.counts.astype(int).tolist(),
        "reseeded_clusters": state.reseeded,
        "seed": spec.seed,
        "init": spec.init,
        "init_seed": selection.seed,
        "max_rounds": spec.max_rounds,
        "tol": spec.tol,
        "n_init": spec.n_init,
        "restarts_on": spec.restarts_on,
    }
    if selection.restarts:
        metrics["restarts"] = list(selection.restarts)
    sweep = None
    if selection.sweep is not None:
        sweep = {str(row["k"]): {key: value for key, value in row.items() if key != "k"}
                 for row in selection.sweep}
        metrics["select"] = selection.criterion
        metrics["sweep"] = sweep
    if state.merge_map is not None:
        metrics["merge_to"] = spec.merge_to
        metrics["merged_cluster_sizes"] = np.bincount(
            state.merge_map, weights=partials.counts, minlength=spec.merge_to).astype(int).tolist()
        hierarchy = {"k": k, "merge_to": spec.merge_to,
                     "linkage": state.linkage.tolist(),
                     "fine_to_merged": state.merge_map.tolist()}
        _write_bytes(FileSystems.join(spec.output, "hierarchy.json"),
                     json.dumps(hierarchy, indent=2).encode("utf-8"))
    _write_bytes(FileSystems.join(spec.output, "metrics.json"),
                 json.dumps(metrics, indent=2).encode("utf-8"))

    from sklearn.metrics import pairwise_distances_argmin

    z = standardizer(sample.rows).astype(np.float64)
    labels = pairwise_distances_argmin(z, state.centroids)  # chunked: bounded memory
    report.write_report(FileSystems.join(spec.output, "report.html"), report.render_report(
        metrics, original, list(spec.features), z, labels.astype(np.int64), state.centroids,
        sweep=sweep, linkage=state.linkage))
    return metrics
