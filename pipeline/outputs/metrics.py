"""metrics.json: what a run reports, as a dict of JSON values (its schema is here, in one place).

A fit's metrics (`fit_metrics`):
  run_id          str, the run that wrote them (the `_SUCCESS` manifest names it too)
  k               int, the chosen K
  features        [str], the D features, in the model's order
  categorical     [str], those of them that are categories (one-hot; their columns in
                  centroids.csv are FEATURE=VALUE, each category's share of the cluster)
  rows_read, rows_valid, rows_rejected, files_rejected   int (`counts_metrics`)
  values_imputed  {feature: int} (with --missing impute) the valid rows whose value of
                  the feature was missing and is the training mean (a category's:
                  the category __missing__)
  rounds          int, Lloyd rounds over all rows; converged: bool
  inertia         float, sum of squared distances to the final centroids (standardized;
                  with distance cosine, the sum of 1 - cos)
  inertia_history [float], the inertia each round started from
  cluster_sizes   [int] of K; reseeded_clusters: [int], re-seeded empty clusters
  standardize, distance, missing, seed, init, init_seed, max_rounds, tol, n_init, restarts_on: the
                  parameters used
  init_model      (with --init_model) the version directory of the model the fit started
                  from (init is then "given")
  restarts        (with several starts) the inertia of each, see core.selection
  select, sweep   (with a K sweep) the criterion and {K: scores}
  merge_to, merged_cluster_sizes   (with --merge_to) the groups and their sizes
  clusters        [{id, size, radius}]: radius is the RMS distance to the centroid
                  (cosine: the mean 1 - cos), what normalized_distance divides by
  normalized_distance   {"p50", "p90", "p99", "p999"}: quantiles of the
                  training rows' normalized distance (from a REQ sketch)
  weight_column, cluster_weights, merged_cluster_weights   (with --weight_column) the
                  weight column and the per-cluster (per-group) weight sums [float]; the
                  sizes stay row counts, each cluster gets "weight"; inertia and radius
                  are weighted (docs/weights.md)
  contamination, anomaly_threshold   (with --contamination) the fraction and the
                  normalized distance above which a row is an anomaly
  rejected_by_reason, rejected_by_file   {str: int}, the rejected rows by reason
                  ("COLUMN: kind", pipeline.io.ingest.reason_key) and by file: the
                  TOP_REJECTED largest, largest first, then "other" (the rest) when
                  there are more; each adds up to rows_rejected (`rejection_metrics`)
A score's: run_id, model, the row counts and values_imputed (pipeline.score).
"""

import numpy as np

from transforms.core.lloyd import RoundState
from transforms.core.partials import Partials
from transforms.core.selection import Selection
from transforms.core.statistics import ClusterStats


def counts_metrics(counts: np.ndarray, features=None, missing: str = "reject") -> dict:
    """ReadValidRows' counts (int64 [4 + D]) -> the metrics' row and file counts, and
    with missing "impute" the values imputed per feature (`features`, D names)."""
    result = {
        "rows_read": int(counts[0]),
        "rows_valid": int(counts[1]),
        "rows_rejected": int(counts[2]),
        "files_rejected": int(counts[3]) if len(counts) > 3 else 0,
    }
    if missing == "impute":
        imputed = list(counts[4:]) if len(counts) > 4 else [0] * len(features)
        result["values_imputed"] = {name: int(n) for name, n in zip(features, imputed)}
    return result


def read_order(spec) -> list:
    """The order of the readers' per-feature counts: the numeric features, then the
    categorical ones (a spec without `categorical` has numeric features alone)."""
    categorical = list(getattr(spec, "categorical", ()))
    return [f for f in spec.features if f not in categorical] + categorical


# metrics.json names at most this many reasons and files of rejected rows.
TOP_REJECTED = 20
# The key of the rest: pipeline.io.ingest.OTHER, the summary's (the layers keep
# pipeline/outputs from importing pipeline/io; a test checks they agree).
OTHER = "other"


def rejection_metrics(summary: dict) -> dict:
    """ReadValidRows' rejection summary ({"by_reason": {str: int}, "by_file": {str: int}},
    pipeline.io.ingest.RejectionSummary) -> rejected_by_reason / rejected_by_file."""
    result = {}
    for key, name in (("by_reason", "rejected_by_reason"), ("by_file", "rejected_by_file")):
        counts = summary.get(key) or {}
        named = sorted(
            ((k, int(n)) for k, n in counts.items() if k != OTHER), key=lambda kn: (-kn[1], kn[0])
        )
        top = dict(named[:TOP_REJECTED])
        rest = int(counts.get(OTHER, 0)) + sum(n for _, n in named[TOP_REJECTED:])
        if rest:
            top[OTHER] = rest
        result[name] = top
    return result


def fit_metrics(
    state: RoundState,
    selection: Selection,
    partials: Partials,
    statistics: ClusterStats,
    counts: np.ndarray,
    spec,
    run_id: str,
) -> dict:
    """A fit's metrics (see the module docstring); `spec` is its FitSpec."""
    result = {
        "run_id": run_id,
        "k": len(state.centroids),
        "features": list(spec.features),
        "categorical": list(getattr(spec, "categorical", ())),
        **counts_metrics(counts, read_order(spec), spec.missing),
        "rounds": state.rounds,
        "converged": state.converged,
        "inertia": partials.inertia,
        "inertia_history": list(state.inertia_history),
        "cluster_sizes": partials.counts.astype(int).tolist(),
        "reseeded_clusters": state.reseeded,
        "standardize": spec.standardize,
        "distance": spec.distance,
        "missing": spec.missing,
        "seed": spec.seed,
        "init": spec.init,
        "init_seed": selection.seed,
        **({"init_model": spec.init_model.model_dir} if spec.init_model is not None else {}),
        "max_rounds": spec.max_rounds,
        "tol": spec.tol,
        "n_init": spec.n_init,
        "restarts_on": spec.restarts_on,
    }
    if selection.restarts:
        result["restarts"] = list(selection.restarts)
    if selection.sweep is not None:
        result["select"] = selection.criterion
        result["sweep"] = {
            str(row["k"]): {key: value for key, value in row.items() if key != "k"}
            for row in selection.sweep
        }
    result["clusters"] = [
        {"id": i, "size": int(size), "radius": float(radius)}
        for i, (size, radius) in enumerate(zip(statistics.sizes, statistics.radii))
    ]
    if partials.weights is not None:  # a weighted fit: sizes stay row counts (docs/weights.md)
        result["weight_column"] = spec.weight_column
        result["cluster_weights"] = partials.weights.tolist()
        for cluster, weight in zip(result["clusters"], partials.weights):
            cluster["weight"] = float(weight)
    result["normalized_distance"] = {
        name: statistics.quantile(q)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))
    }
    if spec.contamination is not None:
        result["contamination"] = spec.contamination
        result["anomaly_threshold"] = statistics.threshold(spec.contamination)
    if state.merge_map is not None:
        result["merge_to"] = spec.merge_to
        result["merged_cluster_sizes"] = (
            np.bincount(state.merge_map, weights=partials.counts, minlength=spec.merge_to)
            .astype(int)
            .tolist()
        )
        if partials.weights is not None:
            result["merged_cluster_weights"] = np.bincount(
                state.merge_map, weights=partials.weights, minlength=spec.merge_to
            ).tolist()
    return result


def hierarchy(state: RoundState, merge_to: int) -> dict:
    """hierarchy.json of a merged fit: the Ward linkage of the K centroids and the
    fine -> merged cluster map."""
    return {
        "k": len(state.centroids),
        "merge_to": merge_to,
        "linkage": state.linkage.tolist(),
        "fine_to_merged": state.merge_map.tolist(),
    }
