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
    assert len(_pngs(html_text)) == 6
    sample = rng.normal(size=(50, 1))
    html_text = render_report(metrics, c * 3 + 1, ["only"], sample, rng.integers(0, k, 50), c)
    assert len(_pngs(html_text)) == 4


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
