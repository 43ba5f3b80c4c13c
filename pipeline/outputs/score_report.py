"""The scoring report, OUTPUT/report.html of a `score` job: one self-contained web page.

What it shows, from the score's metrics.json (its `drift` section,
pipeline/outputs/drift.py) and the training figures the model keeps
(transforms.beam.assign.training_statistics): the row counts and the rejected rows
by reason, the drift warning if any, each cluster's share of the scored rows beside
its share of the training rows, and the distribution of the normalized distance
(distance over the cluster's radius) of both with the anomaly threshold. The
figures and tables are drawn with the fit report's helpers (pipeline/outputs/report.py).
"""

from typing import Optional, Sequence

import numpy as np

from pipeline.outputs.report import (
    _CSS,
    _cell_number,
    _esc,
    _fmt,
    _new_figure,
    _png_img,
    _provenance_table,
    _rejected_section,
    _table,
)

SCORED, TRAINING = "#1f77b4", "#7f7f7f"
# Above this many clusters the shares are a figure alone (the table would be long).
MAX_SHARE_ROWS = 64


def _shares_figure(scored: Sequence[float], training: Sequence[float]) -> str:
    """Each cluster's share of the scored rows beside its share of the training rows."""
    k = len(training)
    fig = _new_figure(min(max(6.0, 0.45 * k + 2), 11), 3.5)
    ax = fig.add_subplot()
    ids = np.arange(k)
    width = 0.4
    ax.bar(ids - width / 2, training, width, color=TRAINING, label="training rows")
    ax.bar(ids + width / 2, scored, width, color=SCORED, label="scored rows")
    ax.set_xlabel("cluster")
    ax.set_ylabel("share of the rows")
    if k <= 30:
        ax.set_xticks(ids)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    return _png_img(fig, "cluster shares, scored and training rows")


def _distances_figure(
    tail: np.ndarray,
    training: np.ndarray,
    scored: Optional[np.ndarray],
    threshold: Optional[float],
) -> str:
    """The fraction of rows above each normalized distance (log scale), training and
    scored, both read at the same fractions `tail`, with the anomaly threshold."""
    fig = _new_figure(8, 3.8)
    ax = fig.add_subplot()
    curves = (
        (training, TRAINING, "training rows", 3.0),  # wide: the scored curve shows on it
        (scored, SCORED, "scored rows", 1.2),
    )
    for values, color, label, width in curves:
        if values is None:
            continue
        finite = np.isfinite(values)
        ax.plot(values[finite], tail[finite], color=color, label=label, linewidth=width)
    ax.set_yscale("log")
    ax.set_xlabel("normalized distance (distance / the cluster's radius)")
    ax.set_ylabel("fraction of rows above")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="#d62728", linestyle="--", linewidth=1)
        ax.annotate(
            f"anomaly threshold {threshold:.3g}",
            (threshold, float(tail.max())),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=8,
            color="#d62728",
        )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png_img(fig, "distribution of normalized distances, scored and training rows")


def render_score_report(
    metrics: dict,
    provenance: Optional[dict] = None,
    distances: Optional[dict] = None,
) -> str:
    """The HTML text of a score's report (UTF-8, one file, no external resource).

    metrics: the score's metrics.json: run_id, model, features, rows_read, rows_valid,
        rows_rejected (rejected_by_reason / rejected_by_file: a "Rejected rows"
        section), and `drift` (drift.drift_metrics: rows, cluster_shares,
        training_cluster_shares, normalized_distance, training_normalized_distance,
        contamination, anomaly_rate, warning); without `drift` (a model that keeps no
        training statistics) the page says so.
    provenance: optional {"command", "version", "runner", "started", "model", "input",
        "files", "run id", ...}: the "Provenance" section.
    distances: optional {"tail": float [Q] fractions of rows, "training": float [Q] and
        "scored": float [Q] the normalized distances above which they lie, "threshold":
        float or None}: the distribution figure.

    Images: 2 with `drift` and `distances` (shares, distances), 1 with `drift` alone.
    """
    parts = []

    def section(title: str, *body: str) -> None:
        parts.append(f"<section><h2>{_esc(title)}</h2>{''.join(body)}</section>")

    drift = metrics.get("drift")
    warning = (drift or {}).get("warning")
    if warning:
        parts.append(
            '<p class="warning"><strong>Drift:</strong> '
            + _esc(warning)
            + " (see docs/scoring.md, 'Drift').</p>"
        )

    summary = [
        ("rows read", metrics.get("rows_read")),
        ("rows valid (scored)", metrics.get("rows_valid")),
        ("rows rejected", metrics.get("rows_rejected")),
        ("K (the model's clusters)", len(drift["cluster_shares"]) if drift else None),
        ("contamination", (drift or {}).get("contamination")),
        ("anomaly rate", (drift or {}).get("anomaly_rate")),
        ("features", ", ".join(metrics.get("features") or [])),
    ]
    section(
        "Summary",
        _table(["", "value"], [[n, _fmt(v)] for n, v in summary], text_columns=(0, 1)).replace(
            '<td class="text">', '<td class="text wrap">'
        ),
    )

    if provenance is not None:
        section("Provenance", _provenance_table(provenance))

    rejected = _rejected_section(metrics)
    if rejected:
        section("Rejected rows", rejected)

    if not drift:
        section(
            "Scored against training",
            '<p class="note">The model keeps no statistics of its training rows (fitted '
            "before cluster statistics): nothing to compare the scored rows with.</p>",
        )
    else:
        scored, training = drift["cluster_shares"], drift["training_cluster_shares"]
        rows = [
            [str(i), _cell_number(100 * t) + " %", _cell_number(100 * s) + " %"]
            for i, (t, s) in enumerate(zip(training, scored))
        ]
        section(
            "Cluster shares",
            '<p class="note">Each cluster\'s share of the scored rows beside its share '
            "of the rows the model was fitted on.</p>",
            _shares_figure(scored, training),
            _table(["cluster", "training", "scored"], rows) if len(rows) <= MAX_SHARE_ROWS else "",
        )
        names = list(drift["normalized_distance"])
        table = _table(
            ["", *names],
            [
                ["training rows"] + [_fmt(drift["training_normalized_distance"][n]) for n in names],
                ["scored rows"] + [_fmt(drift["normalized_distance"][n]) for n in names],
            ],
        )
        figure = ""
        if distances is not None:
            figure = _distances_figure(
                np.asarray(distances["tail"], np.float64),
                np.asarray(distances["training"], np.float64),
                None if distances.get("scored") is None else np.asarray(distances["scored"]),
                distances.get("threshold"),
            )
        threshold = (distances or {}).get("threshold")
        rule = (
            f" Rows right of the dashed line (normalized distance {threshold:.3g}, the "
            f"training rows' {1 - drift['contamination']:.4g} quantile) are anomalies."
            if threshold is not None and drift.get("contamination") is not None
            else ""
        )
        section(
            "Normalized distances",
            '<p class="note">'
            + _esc(
                "A row's normalized distance is its distance over its cluster's radius "
                "(the RMS distance of the cluster's training rows; for cosine their mean "
                "1 - cos). The curves: the fraction of rows above each value; data like "
                "the training data follows the grey curve." + rule
            )
            + "</p>",
            figure,
            table,
        )

    title = "shardmeans score report"
    css = (
        _CSS + "p.warning { background: #fdecea; border-left: 4px solid #d62728; padding: 0.5em; }"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )
