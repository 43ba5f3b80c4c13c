"""The HTML fit report (pipeline/outputs/report.py): sections, inline PNGs, escaping, writing."""

import base64
import re
import subprocess
import sys

import numpy as np
import pytest

from pipeline.outputs.report import PNG_SIGNATURE, render_report, write_report

from helpers import ROOT

K, D, M = 3, 4, 300
FEATURES = ["height", "<b>w&h</b>", 'say "hi"', "price_$"]
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
BASE_SECTIONS = [
    "Summary",
    "Inertia by round",
    "Cluster sizes",
    "PCA projection of the sample",
    "Centroids by feature",
]


@pytest.fixture(scope="module")
def fit_inputs():
    """Synthetic fit outputs: 3 clusters of 100 standardized rows in 4 features."""
    rng = np.random.default_rng(0)
    centroids_std = rng.normal(0, 2, size=(K, D))
    labels = np.repeat(np.arange(K, dtype=np.int64), M // K)
    sample = centroids_std[labels] + rng.normal(0, 0.3, size=(M, D))
    mean, std = np.array([170.0, 0.5, 1e4, 3.0]), np.array([10.0, 0.01, 2e3, 1.0])
    centroids_orig = centroids_std * std + mean  # features on very different scales
    metrics = {
        "k": K,
        "features": FEATURES,
        "rows_read": 1005,
        "rows_valid": 1000,
        "rows_rejected": 5,
        "rounds": 4,
        "max_rounds": 30,
        "converged": True,
        "inertia": 123.456789,
        "inertia_history": [900.5, 300.25, 130.0, 123.456789],
        "cluster_sizes": [340, 330, 330],
        "seed": 0,
    }
    return dict(
        metrics=metrics,
        centroids_original=centroids_orig,
        features=FEATURES,
        sample=sample,
        sample_labels=labels,
        centroids_standardized=centroids_std,
    )


def _pngs(html_text: str) -> list:
    payloads = IMG.findall(html_text)
    assert html_text.count("<img ") == len(payloads)  # no image of another kind
    return [base64.b64decode(p, validate=True) for p in payloads]


def _check_common(html_text: str) -> None:
    assert html_text.startswith("<!DOCTYPE html>")
    for title in BASE_SECTIONS:
        assert f"<h2>{title}</h2>" in html_text
    for png in _pngs(html_text):
        assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    # Feature names are escaped wherever they appear, and never appear raw.
    assert "&lt;b&gt;w&amp;h&lt;/b&gt;" in html_text and "<b>w&h</b>" not in html_text
    assert "say &quot;hi&quot;" in html_text and 'say "hi"' not in html_text
    assert "price_$" in html_text
    for value in ("1,005", "1,000", "30", "123.457", "yes"):  # the summary table
        assert f'<td class="text">{value}</td>' in html_text


def test_plain_report(fit_inputs):
    html_text = render_report(**fit_inputs)
    _check_common(html_text)
    assert len(_pngs(html_text)) == 4
    assert "K sweep" not in html_text and "Cluster hierarchy" not in html_text


def test_report_with_sweep(fit_inputs):
    sweep = {
        "4": {"inertia": 100.0, "silhouette": 0.41, "rounds": 7},
        "2": {"inertia": 400.0, "silhouette": 0.55, "rounds": 3},
        "3": {"inertia": 123.5, "silhouette": 0.72, "rounds": 4},
    }
    html_text = render_report(**fit_inputs, sweep=sweep)
    _check_common(html_text)
    assert "<h2>K sweep</h2>" in html_text and "Cluster hierarchy" not in html_text
    assert len(_pngs(html_text)) == 5
    sweep_html = html_text.split("<h2>K sweep</h2>")[1]
    # Rows sorted by K, every metric given in the table.
    assert [int(k) for k in re.findall(r'<td class="text">(\d+)</td>', sweep_html)] == [2, 3, 4]
    assert "<th>rounds</th>" in sweep_html and "0.72" in sweep_html


def test_report_with_linkage(fit_inputs):
    from transforms.core.hierarchy import ward_linkage

    z = ward_linkage(fit_inputs["centroids_standardized"], fit_inputs["metrics"]["cluster_sizes"])
    html_text = render_report(**fit_inputs, linkage=z)
    _check_common(html_text)
    assert "<h2>Cluster hierarchy</h2>" in html_text and "K sweep" not in html_text
    assert len(_pngs(html_text)) == 5


def test_report_edge_cases_render(fit_inputs):
    # D = 1 (one principal component), no rounds, an empty sample, many clusters (no
    # annotations, truncated dendrogram), a NaN silhouette.
    rng = np.random.default_rng(1)
    k = 70
    c = np.sort(rng.normal(size=(k, 1)), axis=0)
    metrics = dict(
        fit_inputs["metrics"],
        k=k,
        inertia_history=[],
        rounds=0,
        cluster_sizes=list(rng.integers(1, 100, k)),
    )
    sizes = np.array(metrics["cluster_sizes"])
    from transforms.core.hierarchy import ward_linkage

    html_text = render_report(
        metrics,
        c * 3 + 1,
        ["only"],
        np.zeros((0, 1)),
        np.zeros(0, np.int64),
        c,
        sweep={5: {"inertia": 1.0, "silhouette": None}},
        linkage=ward_linkage(c, sizes),
    )
    assert len(_pngs(html_text)) == 5  # no round: a note, not an inertia figure
    sample = rng.normal(size=(50, 1))
    html_text = render_report(metrics, c * 3 + 1, ["only"], sample, rng.integers(0, k, 50), c)
    assert len(_pngs(html_text)) == 3


def test_pca_draws_at_most_max_points(fit_inputs, monkeypatch):
    import pipeline.outputs.report as report

    monkeypatch.setattr(report, "MAX_POINTS", 50)
    html_text = render_report(**fit_inputs)
    assert "50 of 300 sample rows" in html_text and len(_pngs(html_text)) == 4


@pytest.mark.parametrize("m,d", [(2000, 6), (3, 2), (1, 3), (40, 1)])
def test_pca_projection_is_a_full_svds(m, d):
    """The plot's projection (PCA from the covariance) is a full SVD's, in shape and value;
    a sample of one row projects on the centroids' components."""
    from sklearn.decomposition import PCA

    from pipeline.outputs.report import _project

    rng = np.random.default_rng(m)
    sample = rng.normal(size=(m, d)) @ rng.normal(size=(d, d))
    centroids = rng.normal(size=(4, d))
    points, cents, labels = _project(sample, centroids)
    assert points.shape == (m, 2) and cents.shape == (4, 2) and len(labels) == 2
    basis = sample if m >= 2 else centroids
    full = PCA(min(2, d, len(basis)), svd_solver="full").fit(basis)
    n = full.n_components_
    np.testing.assert_allclose(points[:, :n], full.transform(sample), atol=1e-8)
    np.testing.assert_allclose(cents[:, :n], full.transform(centroids), atol=1e-8)
    assert not points[:, n:].any()


def test_same_inputs_same_bytes(fit_inputs):
    assert render_report(**fit_inputs) == render_report(**fit_inputs)


def test_bad_shapes_raise(fit_inputs):
    with pytest.raises(ValueError, match="features has 3 names"):
        render_report(**dict(fit_inputs, features=FEATURES[:3]))
    with pytest.raises(ValueError, match="sample_labels"):
        render_report(**dict(fit_inputs, sample_labels=fit_inputs["sample_labels"] + 1))
    with pytest.raises(ValueError, match="centroids_standardized"):
        render_report(**dict(fit_inputs, centroids_standardized=np.zeros((K, D + 1))))


def test_import_has_no_side_effects():
    # A fresh interpreter: importing the module loads no plotting or ML library
    # (so it cannot pick or switch a matplotlib backend).
    code = (
        "import sys, pipeline.outputs.report; print(*(m in sys.modules for m in "
        "('matplotlib', 'matplotlib.pyplot', 'sklearn', 'scipy')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == ["False"] * 4


def test_write_report(fit_inputs, tmp_path):
    html_text = render_report(**fit_inputs)
    path = str(tmp_path / "report.html")
    write_report(path, html_text)
    with open(path, encoding="utf-8") as f:
        assert f.read() == html_text


# ----------------------------------------------------------------------------- #23


def _merged(fit_inputs, k=12, groups=4, seed=2):
    """Inputs of a K-cluster fit merged into `groups` (as --merge_to), its linkage and map."""
    from transforms.core.hierarchy import ward_merge

    rng = np.random.default_rng(seed)
    c = rng.normal(0, 3, size=(k, D))
    sizes = rng.integers(10, 100, k)
    labels = rng.integers(0, k, 400)
    sample = c[labels] + rng.normal(0, 0.3, size=(400, D))
    z, merge_map = ward_merge(c, sizes, groups)
    metrics = dict(fit_inputs["metrics"], k=k, cluster_sizes=sizes.tolist())
    inputs = dict(
        fit_inputs,
        metrics=metrics,
        centroids_original=c * 2 + 1,
        sample=sample,
        sample_labels=labels,
        centroids_standardized=c,
    )
    return inputs, z, merge_map


@pytest.mark.parametrize("k,groups", [(12, 4), (70, 5), (6, 1), (5, 5)])
def test_dendrogram_colours_are_the_merged_groups(fit_inputs, k, groups):
    """Every link inside a merged group has that group's colour, every link joining groups
    the grey above the cut; groups have distinct colours (hierarchy's fine_to_merged)."""
    from pipeline.outputs import report

    _, z, merge_map = _merged(fit_inputs, k, groups)
    colors = report.group_colors(merge_map)
    assert len(set(colors)) == groups and report.ABOVE_CUT not in colors
    data = report.dendrogram_data(z, merge_map)
    # Each drawn link (a row of z, in scipy's drawing order) against the leaves under it.
    leaves_under = {i: {i} for i in range(k)}
    for i, (a, b) in enumerate(z[:, :2].astype(int)):
        leaves_under[k + i] = leaves_under[a] | leaves_under[b]
    expected = []
    for node in range(k, 2 * k - 1):
        under = {int(merge_map[leaf]) for leaf in leaves_under[node]}
        expected.append(colors[under.pop()] if len(under) == 1 else report.ABOVE_CUT)
    # scipy draws the links in another order: compare the multisets of colours, then
    # each leaf's own link.
    shown = len(data["color_list"])
    if shown == k - 1:
        assert sorted(data["color_list"]) == sorted(expected)
        for leaf, color in zip(data["leaves"], data["leaves_color_list"]):
            alone = (merge_map == merge_map[leaf]).sum() == 1
            assert color == (report.ABOVE_CUT if alone else colors[merge_map[leaf]])
    else:  # truncated: the last merges, each coloured as its node
        assert sorted(data["color_list"]) == sorted(expected[-shown:])


def test_merged_report_colours_agree_with_fine_to_merged(fit_inputs):
    from pipeline.outputs import report

    inputs, z, merge_map = _merged(fit_inputs)
    html_text = render_report(**inputs, linkage=z, merge_map=merge_map)
    assert len(_pngs(html_text)) == 5
    groups = re.findall(
        r'<tr data-group="(\d+)" data-color="(#[0-9a-f]{6})"><td class="text">.*?</td>'
        r'<td class="text wrap">([\d, ]+)</td>',
        html_text,
    )
    assert [int(g) for g, _, _ in groups] == list(range(4))
    assert [c for _, c, _ in groups] == report.group_colors(merge_map)
    for g, _, fine in groups:
        assert [int(i) for i in fine.split(", ")] == np.flatnonzero(merge_map == int(g)).tolist()
    # Sizes' bars and PCA points: each fine cluster in its group's colour.
    np.testing.assert_array_equal(
        report._cluster_colors(12, merge_map), report._palette(4)[merge_map]
    )


def test_bad_merge_map_raises(fit_inputs):
    with pytest.raises(ValueError, match="merge_map"):
        render_report(**fit_inputs, merge_map=np.array([0, 2, 2]))
    with pytest.raises(ValueError, match="merge_map"):
        render_report(**fit_inputs, merge_map=np.array([0, 1]))


@pytest.mark.parametrize("history", [[5.0], [5.0, 5.0], [7.5, 5.0]])
def test_one_or_two_rounds_are_a_table(fit_inputs, history):
    metrics = dict(fit_inputs["metrics"], inertia_history=history, rounds=len(history))
    html_text = render_report(**dict(fit_inputs, metrics=metrics))
    section = html_text.split("<h2>Inertia by round</h2>")[1].split("</section>")[0]
    assert "<img" not in section and len(_pngs(html_text)) == 3
    assert "round 1 (its start)" in section and "after the last round" in section
    assert "123.457" in section  # the final inertia


def test_flat_inertia_axis_starts_at_zero(fit_inputs, monkeypatch):
    """Three equal rounds: the axis runs from 0 (no "1 +- 4%" ticks, no offset)."""
    from pipeline.outputs import report

    seen = []
    monkeypatch.setattr(report, "_png_img", lambda fig, alt: seen.append(fig) or "<img>")
    report._inertia_figure([5.0, 5.0, 5.0])
    ax = seen[0].axes[0]
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 5.0
    assert ax.get_xlim() == (0.5, 3.5)


@pytest.mark.parametrize("k,merged", [(20, None), (64, None), (64, 8), (8, None)])
def test_pca_legend_never_covers_the_points(k, merged):
    """Up to MAX_LEGEND_ENTRIES entries the legend is beside the axes; past it there is
    none; the figure fits the report's 1100 px width."""
    from pipeline.outputs import report
    from transforms.core.hierarchy import ward_merge

    rng = np.random.default_rng(k)
    c = rng.normal(0, 3, size=(k, 3))
    labels = rng.integers(0, k, 2000)
    sample = c[labels] + rng.normal(0, 0.5, size=(2000, 3))
    merge_map = None if merged is None else ward_merge(c, np.ones(k), merged)[1]
    fig = report._pca_plot(sample, labels, c, merge_map)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legends = fig.legends + ([ax.get_legend()] if ax.get_legend() else [])
    entries = k if merged is None else merged
    assert len(legends) == (1 if entries <= report.MAX_LEGEND_ENTRIES else 0)
    box = ax.get_window_extent(renderer)
    for legend in legends:
        assert not legend.get_window_extent(renderer).overlaps(box)
        assert len(legend.get_texts()) == entries + 1
    assert fig.get_size_inches()[0] * fig.dpi <= 1100
    assert box.width >= 500  # the points keep most of the figure


def test_rejected_rows_by_reason_and_file(fit_inputs):
    by_reason = {f"f{i}: missing value": 30 - i for i in range(25)}
    by_reason["other"] = 7
    total = sum(by_reason.values())
    metrics = dict(
        fit_inputs["metrics"],
        rows_rejected=total,
        files_rejected=1,
        rejected_by_reason=by_reason,
        rejected_by_file={"/data/a<1>.csv": total - 2, "/data/b.csv": 2},
    )
    html_text = render_report(**dict(fit_inputs, metrics=metrics))
    section = html_text.split("<h2>Rejected rows</h2>")[1].split("</section>")[0]
    assert "1 files unreadable" in section and "/data/a&lt;1&gt;.csv" in section
    cells = re.findall(r'<td class="text wrap">([^<]*)</td><td>([\d,]+)</td>', section)
    reasons = cells[: report_max() + 1]
    assert reasons[0] == ("f0: missing value", "30")
    # The first MAX_REJECTED_ROWS reasons, then "other reasons": the 5 not shown + other.
    assert reasons[-1] == ("other reasons", str(sum(30 - i for i in range(20, 25)) + 7))
    assert sum(int(n.replace(",", "")) for _, n in reasons) == total
    files = cells[report_max() + 1 :]
    assert sum(int(n.replace(",", "")) for _, n in files) == total
    # Nothing rejected: no section.
    metrics = dict(fit_inputs["metrics"], rows_rejected=0)
    assert "<h2>Rejected rows</h2>" not in render_report(**dict(fit_inputs, metrics=metrics))


def report_max():
    from pipeline.outputs.report import MAX_REJECTED_ROWS

    return MAX_REJECTED_ROWS


def test_provenance_section(fit_inputs):
    provenance = {
        "command": "shardmeans fit --input 'data/*.csv' --output <out>",
        "version": "1.2.3",
        "input": "/data/*.csv",
        "files": 12,
        "runner": "DirectRunner",
        "started": "2026-12-07T21:00:00+00:00",
        "duration_seconds": 125.4,
    }
    html_text = render_report(**fit_inputs, provenance=provenance)
    section = html_text.split("<h2>Provenance</h2>")[1].split("</section>")[0]
    labels = re.findall(r'<td class="text wrap">([^<]*)</td><td class="text wrap">', section)
    assert labels == [
        "command line",
        "shardmeans version",
        "input pattern",
        "input files",
        "runner",
        "driver started (UTC)",
        "duration (driver start to this report)",
    ]
    assert "--output &lt;out&gt;" in section and "2 min 05 s" in section and ">12<" in section


def test_driver_provenance_and_the_reports_duration():
    """The driver's record (command line quoted, version, runner, start) and what the
    report step adds: the input, its files, the duration since the driver's start; a
    template's run has no duration (its driver built the template)."""
    import time
    from importlib.metadata import version
    from types import SimpleNamespace

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.fit import driver_provenance
    from pipeline.outputs.writers import fit_provenance

    started = time.time() - 5
    options = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    record = driver_provenance(["fit", "--input", "my data/*.csv", "--k", "3"], options, started)
    assert record["command"] == "shardmeans fit --input 'my data/*.csv' --k 3"
    assert record["version"] == version("shardmeans")
    assert record["runner"] == "DirectRunner (Beam's FnApiRunner, multi_processing, 2 workers)"
    assert record["started"].endswith("+00:00") and record["started_epoch"] == started
    spec = SimpleNamespace(
        provenance=record, files=("a", "b"), input="/d/*.csv", match_when_run=False
    )
    shown = fit_provenance(spec, {"files": 7})
    assert (shown["input"], shown["files"]) == ("/d/*.csv", 2) and "started_epoch" not in shown
    assert 5 <= shown["duration_seconds"] < 600
    template = fit_provenance(
        SimpleNamespace(**dict(vars(spec), match_when_run=True)), {"files": 7}
    )
    assert template["files"] == 7 and "duration_seconds" not in template
    assert template["template built"] == record["started"] and "started" not in template
    assert fit_provenance(SimpleNamespace(**dict(vars(spec), provenance=None))) is None


@pytest.mark.parametrize("contamination", [None, 0.01])
def test_radii_and_the_distribution_of_normalized_distances(fit_inputs, contamination):
    from transforms.core.statistics import TAIL_PROBABILITIES

    metrics = dict(fit_inputs["metrics"])
    metrics["clusters"] = [{"id": i, "size": 330, "radius": 1.0 + i} for i in range(K)]
    quantiles = -np.log(TAIL_PROBABILITIES)  # an exponential's tail, ascending
    threshold = None
    if contamination is not None:
        metrics["contamination"], threshold = contamination, float(-np.log(contamination))
    distances = {"tail": TAIL_PROBABILITIES, "tail_quantiles": quantiles, "threshold": threshold}
    without = render_report(**fit_inputs)
    html_text = render_report(**dict(fit_inputs, metrics=metrics), distances=distances)
    _check_common(html_text)
    assert "<h2>Cluster radii and anomalies</h2>" in html_text
    assert len(_pngs(html_text)) == len(_pngs(without)) + 1
    assert ("(--contamination 0.01)" in html_text) == (contamination is not None)
