"""Drift: how the rows a `score` job assigned compare with the rows the model was fitted on.

Every score writes, in its metrics.json, the scored rows' cluster shares, anomaly rate
and normalized-distance quantiles beside the training figures the model keeps
(transforms.beam.assign.training_statistics), and a warning when the data is clearly
off the training distribution. The rule (docs/scoring-and-serving.md, "Anomalies and drift"):

- the median normalized distance is more than MEDIAN_RATIO times the training median
  (the rows sit far from every cluster, relative to the clusters' own spread), or
- with a contamination (the model's or score's), the anomaly rate is more than
  ANOMALY_RATIO times it.

The per-batch totals merge in any order (`DriftCombineFn`), as the fit's statistics do.
"""

from typing import List, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.core.statistics import QuantileSketch, anomaly_threshold

MEDIAN_RATIO = 2.0
ANOMALY_RATIO = 3.0
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))


def batch_totals(batch: pa.RecordBatch, k: int) -> list:
    """A scored record batch -> [cluster counts int64 [K], anomalies int, QuantileSketch]."""
    labels = batch.column("cluster_id").to_numpy()
    anomalies = 0
    if "is_anomaly" in batch.schema.names:
        anomalies = int(np.count_nonzero(batch.column("is_anomaly").to_numpy(zero_copy_only=False)))
    sketch = QuantileSketch().update(batch.column("normalized_distance").to_numpy())
    return [np.bincount(labels, minlength=k).astype(np.int64), anomalies, sketch]


class DriftCombineFn(beam.CombineFn):
    """Sums `batch_totals` ([counts [K], anomalies, sketch]); empty input: zeros."""

    def __init__(self, k: int):
        self._k = k

    def create_accumulator(self) -> list:
        return [np.zeros(self._k, np.int64), 0, QuantileSketch()]

    def add_input(self, accumulator: list, element: list) -> list:
        accumulator[0] = accumulator[0] + element[0]
        accumulator[1] += element[1]
        accumulator[2].merge(element[2])
        return accumulator

    def merge_accumulators(self, accumulators) -> list:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator: list) -> list:
        return accumulator


def drift_metrics(totals: list, training: dict, contamination: Optional[float]) -> dict:
    """The scored rows beside the training rows, and the warning (None when none)."""
    counts, anomalies, sketch = totals
    n = int(counts.sum())
    tail = training["tail"]
    scored = sketch.tail_quantiles(tail)

    def quantiles(table) -> dict:
        return {name: anomaly_threshold(tail, table, 1.0 - q) for name, q in QUANTILES}

    result = {
        "rows": n,
        "cluster_shares": _shares(counts),
        "training_cluster_shares": _shares(training["sizes"]),
        "normalized_distance": quantiles(scored),
        "training_normalized_distance": quantiles(training["tail_quantiles"]),
    }
    warnings = []
    if n:
        median = result["normalized_distance"]["p50"]
        training_median = result["training_normalized_distance"]["p50"]
        if training_median > 0 and median > MEDIAN_RATIO * training_median:
            warnings.append(
                f"the median normalized distance is {median:.3g}, "
                f"{median / training_median:.3g} times the training rows' {training_median:.3g}"
            )
    if contamination is not None:
        rate = anomalies / n if n else 0.0
        result.update(contamination=contamination, anomaly_rate=rate)
        if n and rate > ANOMALY_RATIO * contamination:
            warnings.append(
                f"{rate:.3g} of the rows are anomalies, where {contamination} was expected"
            )
    result["warning"] = (
        "the data looks off the training distribution: " + "; ".join(warnings) if warnings else None
    )
    return result


def _shares(counts) -> List[float]:
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * len(counts)
