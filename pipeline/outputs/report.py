"""A self-contained HTML report of a fit: one file, its PNG figures inline as base64 data URIs.

    html_text = render_report(metrics, centroids_original, features, sample,
                              sample_labels, centroids_standardized,
                              sweep=None, linkage=None, merge_map=None,
                              provenance=None)
    write_report(FileSystems.join(output, "report.html"), html_text)

Sections, in order (each figure is one <img>):
  Summary                    table: rows read / valid / rejected, K, rounds (and the cap),
                             converged, inertia
  Provenance                 (when `provenance` is given) the command line, version, input,
                             number of files, runner, start and duration
  Rejected rows              (when rows or files were rejected) the counts by reason and by
                             file (metrics["rejected_by_reason"], ["rejected_by_file"])
  Inertia by round           line plot of metrics["inertia_history"], or with at most
                             MAX_TABLE_ROUNDS rounds a table
  Cluster sizes              bar chart of metrics["cluster_sizes"]
  PCA projection             the sample in its first two principal components, by cluster,
                             centroids marked; the legend beside the axes
  Centroids by feature       heatmap of the centroids, coloured by per-feature z-score,
                             original values written in the cells when K x D <= 200,
                             and the same values as an HTML table
  K sweep                    (when `sweep` is given) inertia and silhouette by K, and a table
  Cluster hierarchy          (when `linkage` is given) the dendrogram of the fine clusters,
                             and with `merge_map` a table of the merged groups

With `merge_map` (--merge_to) every per-cluster colour is the colour of the
cluster's merged group: the sizes' bars, the PCA points and centroids, the
dendrogram's links below the cut and its leaf labels, and the groups' table.

Figures are drawn with matplotlib's object API on Agg canvases
(`matplotlib.figure.Figure` + `FigureCanvasAgg`), the way matplotlib
recommends for servers. That renders with Agg whatever the process's backend
is, without `matplotlib.use("Agg")`: switching the global backend would close
the figures of a notebook or GUI that imported this module, and pyplot keeps no
reference to these figures, so nothing leaks between reports. Importing this
module imports nothing heavy and changes nothing; matplotlib, scikit-learn and
SciPy are imported by `render_report`.

Every text put into the HTML goes through `html.escape`; every text put into a
figure has its `$` escaped, so a feature called `price_$` is not read as
matplotlib mathtext.
"""

import base64
import html
import io
import math
from typing import Dict, List, Optional

import numpy as np

# Draw at most this many sample points in the PCA plot: enough to show the
# shapes, few enough to keep the PNG small and the render fast.
MAX_POINTS = 5000
# Write the centroid values in the heatmap cells up to this many cells.
MAX_ANNOTATED_CELLS = 200
# Beyond this many cells the centroid values are not repeated as an HTML table
# (centroids.csv has them): a 1000 x 100 table would be megabytes of report.
MAX_TABLE_CELLS = 5000
# Beyond this many rows (clusters) or columns (features) the heatmap labels only
# some of them, as matplotlib chooses: every label would overlap.
MAX_HEATMAP_LABELS = 60
# Beyond this many fine clusters the dendrogram shows only the last merges.
MAX_DENDROGRAM_LEAVES = 60
# Up to this many entries (clusters, or merged groups) the PCA plot has a legend,
# beside the axes so that it never covers points.
MAX_LEGEND_ENTRIES = 20
# Up to this many clusters each centroid in the PCA plot carries its number
# (past MAX_LEGEND_ENTRIES these numbers are what names the clusters).
MAX_LABELLED_CLUSTERS = 64
# With at most this many rounds the inertia is a table: one or two points make
# no curve (and one point on a flat axis gets matplotlib's meaningless +-4% ticks).
MAX_TABLE_ROUNDS = 2
# The rejected rows' reasons and files listed in the report (metrics.json holds
# at most pipeline.outputs.metrics.TOP_REJECTED of each, the rest as "other").
MAX_REJECTED_ROWS = 20
# The colour of the dendrogram's links above the --merge_to cut (joining groups).
ABOVE_CUT = "#808080"
_DPI = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
p.note { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em;
          vertical-align: -0.1em; border: 1px solid #0003; }
td.wrap { overflow-wrap: anywhere; max-width: 40em; }
"""


# ----------------------------------------------------------------------------- text helpers


def _esc(value) -> str:
    """Any value as HTML-escaped text (quotes too: it may end up in an attribute)."""
    return html.escape(str(value), quote=True)


def _mpl_text(value) -> str:
    """Text for a matplotlib label: `$` escaped so it is never parsed as mathtext."""
    return str(value).replace("$", r"\$")


def _fmt(value) -> str:
    """A metric for a table: ints with thousands separators, floats to 6 significant digits."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "—" if math.isnan(value) else f"{float(value):,.6g}"
    return str(value)


def _cell_number(value: float) -> str:
    """About 3 significant digits, without an exponent between 0.01 and 1e6 (13,500 not 1.35e+04)."""
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if 1e-2 <= magnitude < 1e6:
        return f"{value:,.{max(0, 2 - math.floor(math.log10(magnitude)))}f}"
    return f"{value:.3g}"


def _table(header: List[str], rows: List[List[str]], text_columns=(0,)) -> str:
    """An HTML table; cells are escaped here. Columns in `text_columns` are left-aligned."""

    def cell(tag, i, value):
        cls = ' class="text"' if i in text_columns else ""
        return f"<{tag}{cls}>{_esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


# ----------------------------------------------------------------------------- figure helpers


def _new_figure(width: float, height: float):
    """A Figure on its own Agg canvas (never registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_img(fig, alt: str) -> str:
    """Render `fig` to PNG, release it, and return an <img> with the PNG as a data URI."""
    buffer = io.BytesIO()
    try:
        # No "Software" metadata: the same inputs give the same bytes (retry-safe output).
        fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    finally:
        fig.clear()  # the figure is done with: drop its artists now, not at garbage collection
    payload = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{payload}" alt="{_esc(alt)}">'


def _palette(k: int) -> np.ndarray:
    """RGBA [k, 4]: tab10 / tab20 when they have enough colours, else samples of turbo."""
    from matplotlib import colormaps

    if k <= 10:
        return colormaps["tab10"](np.arange(k))
    if k <= 20:
        return colormaps["tab20"](np.arange(k))
    return colormaps["turbo"](np.linspace(0.05, 0.95, k))


def group_colors(merge_map: np.ndarray) -> List[str]:
    """ "#rrggbb" of each merged group (int64 [K] fine -> group, groups 0..G-1): [G] str."""
    from matplotlib.colors import to_hex

    return [to_hex(c) for c in _palette(int(merge_map.max()) + 1)]


def _cluster_colors(k: int, merge_map: Optional[np.ndarray] = None) -> np.ndarray:
    """RGBA [k, 4] of each fine cluster: its own colour, or with `merge_map` (int64 [k])
    its merged group's, so that every figure agrees with the --merge_to grouping."""
    if merge_map is None:
        return _palette(k)
    return _palette(int(merge_map.max()) + 1)[merge_map]


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------- the figures


def _inertia_figure(history: List[float]) -> str:
    """The inertia curve of >= 1 rounds (float [rounds])."""
    fig = _new_figure(7, 3.5)
    ax = fig.add_subplot()
    rounds = np.arange(1, len(history) + 1)
    ax.plot(rounds, history, marker="o", markersize=3)
    ax.set_xlabel("round")
    ax.set_ylabel("inertia (standardized space)")
    # Integer ticks only: a "round 2.5" tick means nothing.
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0.5, len(history) + 0.5)
    values = np.asarray(history, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and np.ptp(finite) <= 1e-9 * max(float(np.abs(finite).max()), 1e-300):
        # A flat curve: from 0, so the axis says "this value", not "+-4% of it".
        top = float(finite.max())
        ax.set_ylim(min(0.0, 1.1 * top), max(1.1 * top, 0.0) or 1.0)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
    return _png_img(fig, "inertia by round")


def _inertia_section(history: List[float], final) -> str:
    """The body of "Inertia by round": a note, then a plot, or a table for few rounds."""
    note = "Inertia of each Lloyd round against its starting centroids (standardized space)."
    if not history:
        return (
            f'<p class="note">No Lloyd round was run; the final inertia is {_esc(_fmt(final))}.</p>'
        )
    if len(history) > MAX_TABLE_ROUNDS:
        return f'<p class="note">{note}</p>' + _inertia_figure(history)
    rows = [[f"round {i + 1} (its start)", _fmt(v)] for i, v in enumerate(history)]
    rows.append(["after the last round", _fmt(final)])
    return (
        f'<p class="note">{note} {len(history)} round{"s" if len(history) > 1 else ""}: '
        "a table, not a plot.</p>" + _table(["", "inertia"], rows)
    )


def _distances_figure(
    radii: np.ndarray, distances: dict, merge_map: Optional[np.ndarray] = None
) -> str:
    """Radius by cluster (bars), and the training rows' normalized distances as the
    fraction of rows above each value (log scale), with the anomaly threshold."""
    k = len(radii)
    fig = _new_figure(11, 3.5)
    bars, tail = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    bars.bar(np.arange(k), radii, color=_cluster_colors(k, merge_map))
    bars.set_xlabel("cluster")
    bars.set_ylabel("radius (RMS distance)")
    if k <= 30:
        bars.set_xticks(np.arange(k))
    values = np.asarray(distances["tail_quantiles"], np.float64)
    fractions = np.asarray(distances["tail"], np.float64)
    finite = np.isfinite(values)
    tail.plot(values[finite], fractions[finite], color="#1f77b4")
    tail.set_yscale("log")
    tail.set_xlabel("normalized distance (distance / the cluster's radius)")
    tail.set_ylabel("fraction of training rows above")
    threshold = distances.get("threshold")
    if threshold is not None and np.isfinite(threshold):
        tail.axvline(threshold, color="#d62728", linestyle="--", linewidth=1)
        tail.annotate(
            f"anomaly threshold {threshold:.3g}",
            (threshold, fractions[finite].max()),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=8,
            color="#d62728",
        )
    return _png_img(fig, "cluster radii and the distribution of normalized distances")


def _sizes_figure(sizes: np.ndarray, merge_map: Optional[np.ndarray] = None) -> str:
    k = len(sizes)
    fig = _new_figure(min(max(6.0, 0.3 * k + 2), 11), 3.5)
    ax = fig.add_subplot()
    ax.bar(np.arange(k), sizes, color=_cluster_colors(k, merge_map))
    ax.set_xlabel("cluster")
    ax.set_ylabel("rows")
    if k <= 30:
        ax.set_xticks(np.arange(k))
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
    total = sizes.sum()
    if k <= 30 and total > 0:
        # The share of each cluster on its bar: easier to read than the axis.
        for i, n in enumerate(sizes):
            ax.annotate(
                f"{100 * n / total:.1f}%",
                (i, n),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.margins(y=0.12)
    return _png_img(fig, "cluster sizes")


def _project(sample: np.ndarray, centroids: np.ndarray):
    """(sample [m, 2], centroids [K, 2], axis labels) in the sample's first principal components.

    PCA is fitted on the sample (the centroids when the sample has < 2 rows), and the
    centroids are projected with the same fit so they sit among their points. With
    fewer than 2 components available (D = 1, or a single row) the second axis is 0.
    """
    from sklearn.decomposition import PCA

    basis = sample if len(sample) >= 2 else centroids
    n_comp = min(2, basis.shape[1], basis.shape[0])
    if n_comp < 1:
        return np.zeros((len(sample), 2)), np.zeros((len(centroids), 2)), ["", ""]
    # From the D x D covariance: the same components as a full SVD of the sample,
    # for a fraction of its time when rows far outnumber features, as in a sample
    # (bench/RESULTS.md, 'Fixed costs').
    pca = PCA(n_components=n_comp, svd_solver="covariance_eigh").fit(basis)
    ratio = np.nan_to_num(pca.explained_variance_ratio_)  # 0/0 on a constant sample

    def two(x):
        p = pca.transform(x) if len(x) else np.zeros((0, n_comp))
        return np.column_stack([p, np.zeros((len(x), 2 - n_comp))]) if n_comp < 2 else p

    labels = [
        f"PC{i + 1} ({100 * ratio[i]:.1f}% of variance)" if i < n_comp else "(none)"
        for i in range(2)
    ]
    return two(sample), two(centroids), labels


def _pca_plot(
    sample: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    merge_map: Optional[np.ndarray] = None,
):
    """The PCA figure (a Figure, not yet rendered): sample float64 [m, D], labels int64 [m],
    centroids float64 [K, D], merge_map int64 [K] or None.

    The legend (clusters, or with `merge_map` the merged groups, and the centroid
    marker) is beside the axes, never over the points; past MAX_LEGEND_ENTRIES
    entries there is none, and the centroids' numbers (up to MAX_LABELLED_CLUSTERS)
    name the clusters.
    """
    k = len(centroids)
    points, cents, axis_labels = _project(sample, centroids)
    if len(points) > MAX_POINTS:
        # A fixed seed: the same inputs draw the same points.
        keep = np.sort(np.random.default_rng(0).choice(len(points), MAX_POINTS, replace=False))
        points, labels = points[keep], labels[keep]
    colors = _cluster_colors(k, merge_map)
    entries = k if merge_map is None else int(merge_map.max()) + 1
    legend = entries <= MAX_LEGEND_ENTRIES
    # Wider with a legend: the axes keep about the same room, the legend takes the rest.
    fig = _new_figure(9.5 if legend else 7.5, 6)
    ax = fig.add_subplot()
    ax.scatter(
        points[:, 0], points[:, 1], c=colors[labels], s=6, alpha=0.5, linewidths=0, rasterized=True
    )
    ax.scatter(
        cents[:, 0],
        cents[:, 1],
        c=colors,
        marker="X",
        s=140 if k <= MAX_LEGEND_ENTRIES else 70,
        edgecolors="black",
        linewidths=1.2 if k <= MAX_LEGEND_ENTRIES else 0.8,
        zorder=3,
    )
    if k <= MAX_LABELLED_CLUSTERS:
        for i, (x, y) in enumerate(cents):
            ax.annotate(
                str(i),
                (x, y),
                xytext=(5, 5),
                textcoords="offset points",
                fontsize=9 if k <= MAX_LEGEND_ENTRIES else 7,
                fontweight="bold",
            )
    if legend:
        from matplotlib.lines import Line2D

        if merge_map is None:
            names = [f"cluster {i}" for i in range(k)]
            swatches = colors
        else:
            swatches = _palette(entries)
            names = [
                f"group {g}: " + _short_list(np.flatnonzero(merge_map == g)) for g in range(entries)
            ]
        handles = [
            Line2D([], [], marker="o", linestyle="", color=swatches[i], label=names[i])
            for i in range(entries)
        ]
        handles.append(
            Line2D(
                [],
                [],
                marker="X",
                linestyle="",
                color="white",
                markeredgecolor="black",
                markersize=10,
                label="centroid",
            )
        )
        # "outside": constrained layout makes room for it beside the axes.
        fig.legend(handles=handles, fontsize=8, loc="outside right upper", framealpha=0.8)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.grid(alpha=0.3)
    return fig


def _short_list(ids: np.ndarray, at_most: int = 6) -> str:
    """ "clusters 0, 3, 5" of int ids, the first `at_most` then "+N"."""
    shown = ", ".join(str(int(i)) for i in ids[:at_most])
    more = f" +{len(ids) - at_most}" if len(ids) > at_most else ""
    return f"cluster{'s' if len(ids) > 1 else ''} {shown}{more}"


def _pca_figure(sample, labels, centroids, merge_map=None) -> str:
    return _png_img(
        _pca_plot(sample, labels, centroids, merge_map), "PCA projection of the sample by cluster"
    )


def _heatmap_figure(
    centroids_original: np.ndarray, features: List[str], sizes: Optional[np.ndarray]
) -> str:
    k, d = centroids_original.shape
    # Colour = z-score of each feature's centroid values across clusters, so a feature
    # in thousands and one in thousandths are on the same scale; a feature equal in
    # every cluster (std 0) is 0: it defines no cluster.
    mean = centroids_original.mean(axis=0)
    std = centroids_original.std(axis=0)
    z = np.divide(
        centroids_original - mean, std, out=np.zeros_like(centroids_original), where=std > 0
    )
    vmax = max(float(np.abs(z).max()), 1.0)
    # At most 11 inches wide (1,100 px, the report's width: a wider image is shown
    # shrunk, its labels too small to read) and 15 high; rows labelled in the small
    # font (K > 30) need less room. (The render time grows with the area too:
    # bench/RESULTS.md, 'Fixed costs'.)
    row_height = 0.45 if k <= 30 else 0.2
    fig = _new_figure(min(max(6.0, 0.9 * d + 3), 11), min(max(3.0, row_height * k + 1.5), 15))
    ax = fig.add_subplot()
    image = ax.imshow(
        z, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label="z-score across clusters", shrink=0.8)
    if d <= MAX_HEATMAP_LABELS:
        ax.set_xticks(
            np.arange(d),
            [_mpl_text(f) for f in features],
            rotation=45,
            ha="right",
            rotation_mode="anchor",
            fontsize=8 if d <= 30 else 6,
        )
    else:
        ax.set_xlabel("feature (column index)")
    if k <= MAX_HEATMAP_LABELS:
        row_labels = [
            f"{i}" + (f" (n={int(sizes[i]):,})" if sizes is not None else "") for i in range(k)
        ]
        ax.set_yticks(np.arange(k), row_labels, fontsize=8 if k <= 30 else 6)
    ax.set_ylabel("cluster")
    if k * d <= MAX_ANNOTATED_CELLS:
        for i in range(k):
            for j in range(d):
                # White text on the dark ends of the colour map, black elsewhere.
                color = "white" if abs(z[i, j]) > 0.6 * vmax else "black"
                ax.text(
                    j,
                    i,
                    _cell_number(centroids_original[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=color,
                )
    return _png_img(fig, "centroids by feature")


def _sweep_rows(sweep: Dict) -> List[tuple]:
    """[(k int, metrics dict)] sorted by K; keys may be "4" (from JSON) or 4."""
    rows = []
    for key, value in sweep.items():
        try:
            rows.append((int(key), dict(value or {})))
        except (TypeError, ValueError):
            raise ValueError(f"sweep keys must be values of K, got {key!r}") from None
    return sorted(rows, key=lambda r: r[0])


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _sweep_figure(rows: List[tuple], chosen_k) -> str:
    ks = np.array([k for k, _ in rows])
    fig = _new_figure(10, 3.8)
    axes = fig.subplots(1, 2)
    for ax, key, title in (
        (axes[0], "inertia", "inertia (lower is tighter)"),
        (axes[1], "silhouette", "silhouette (higher is better)"),
    ):
        values = np.array([_as_float(m.get(key)) for _, m in rows])
        ok = np.isfinite(values)
        if ok.any():
            ax.plot(ks[ok], values[ok], marker="o")
            ax.set_xlabel("K")
            ax.set_title(title, fontsize=10)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            if chosen_k is not None:
                ax.axvline(
                    chosen_k,
                    color="grey",
                    linestyle="--",
                    linewidth=1,
                    label=f"K = {chosen_k} (this fit)",
                )
                ax.legend(fontsize=8)
        else:
            _empty_note(ax, f"no {key} in the sweep")
    return _png_img(fig, "inertia and silhouette by K")


def link_groups(z: np.ndarray, merge_map: np.ndarray) -> np.ndarray:
    """The merged group of every node of a linkage: int64 [2K-1] (leaves 0..K-1, then
    the cluster formed by each row of `z`, float64 [K-1, 4]), -1 for a node whose
    leaves lie in several groups (a merge above the --merge_to cut)."""
    n = len(z) + 1
    group = np.empty(2 * n - 1, dtype=np.int64)
    group[:n] = merge_map
    for i, (a, b) in enumerate(z[:, :2].astype(np.int64)):
        group[n + i] = group[a] if group[a] == group[b] else -1
    return group


def dendrogram_data(z: np.ndarray, merge_map: Optional[np.ndarray] = None, ax=None) -> dict:
    """scipy's dendrogram of `z` (float64 [K-1, 4]) as the report draws it (on `ax`, or
    not drawn when None), its links coloured by `merge_map` (int64 [K]): a link inside
    a merged group in that group's colour (`group_colors`), a link above the cut
    ABOVE_CUT; without `merge_map` every link ABOVE_CUT. Returns scipy's dict
    ("leaves", "color_list", "leaves_color_list", ...)."""
    from scipy.cluster.hierarchy import dendrogram

    n = len(z) + 1
    if merge_map is None:
        groups, colors = np.full(2 * n - 1, -1), []
    else:
        groups, colors = link_groups(z, merge_map), group_colors(merge_map)

    def link_color(node: int) -> str:
        return colors[groups[node]] if groups[node] >= 0 else ABOVE_CUT

    # Past a few dozen leaves the labels overlap; show the last merges, each
    # contracted leaf labelled with its number of fine clusters, as scipy does.
    truncate = (
        {"truncate_mode": "lastp", "p": MAX_DENDROGRAM_LEAVES} if n > MAX_DENDROGRAM_LEAVES else {}
    )
    return dendrogram(
        z,
        ax=ax,
        no_plot=ax is None,
        labels=[str(i) for i in range(n)],
        leaf_font_size=8,
        link_color_func=link_color,
        **truncate,
    )


def _dendrogram_figure(z: np.ndarray, merge_map: Optional[np.ndarray] = None) -> str:
    n = len(z) + 1
    fig = _new_figure(min(max(7.0, 0.18 * min(n, MAX_DENDROGRAM_LEAVES) + 3), 11), 4.5)
    ax = fig.add_subplot()
    data = dendrogram_data(z, merge_map, ax)
    if merge_map is not None:
        groups, colors = link_groups(z, merge_map), group_colors(merge_map)
        # Each leaf's label in its group's colour (a contracted leaf's too, when all its
        # fine clusters are in one group).
        for label, node in zip(ax.get_xticklabels(), data["leaves"]):
            if groups[node] >= 0:
                label.set_color(colors[groups[node]])
        inside, across = z[groups[n:] >= 0, 2], z[groups[n:] < 0, 2]
        if len(across):
            cut = (inside.max() if len(inside) else 0.0) / 2 + across.min() / 2
            ax.axhline(cut, color=ABOVE_CUT, linestyle="--", linewidth=1)
            ax.annotate(
                f"--merge_to {int(merge_map.max()) + 1}",
                (1, cut),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 3),
                textcoords="offset points",
                ha="right",
                fontsize=8,
                color="#555",
            )
    truncated = n > MAX_DENDROGRAM_LEAVES
    ax.set_xlabel("fine cluster" + (" (or number of fine clusters)" if truncated else ""))
    ax.set_ylabel("Ward distance")
    return _png_img(fig, "dendrogram of the fine clusters")


def _groups_table(merge_map: np.ndarray, sizes: Optional[np.ndarray]) -> str:
    """The merged groups: each one's colour (as in the figures), fine clusters and rows."""
    colors = group_colors(merge_map)
    rows = []
    for g, color in enumerate(colors):
        fine = np.flatnonzero(merge_map == g)
        n = "—" if sizes is None else _fmt(int(sizes[fine].sum()))
        swatch = f'<span class="swatch" style="background:{color}"></span>'
        rows.append(
            f'<tr data-group="{g}" data-color="{color}"><td class="text">{swatch}{g}</td>'
            f'<td class="text wrap">{_esc(", ".join(map(str, fine)))}</td><td>{n}</td></tr>'
        )
    return (
        '<div class="scroll"><table class="groups"><thead><tr><th class="text">group</th>'
        '<th class="text">fine clusters</th><th>rows</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></div>"
    )


# ----------------------------------------------------------------------------- sections

# The provenance's keys in the order shown, with their labels.
_PROVENANCE = (
    ("command", "command line"),
    ("version", "shardmeans version"),
    ("input", "input pattern"),
    ("files", "input files"),
    ("runner", "runner"),
    ("started", "driver started (UTC)"),
    ("duration_seconds", "duration (driver start to this report)"),
)


def _duration(seconds) -> str:
    """12.3 s, 4 min 05 s, 2 h 03 min."""
    seconds = _as_float(seconds)
    if not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _provenance_table(provenance: dict) -> str:
    rows = []
    for key, label in _PROVENANCE:
        if key in provenance:
            value = provenance[key]
            rows.append([label, _duration(value) if key == "duration_seconds" else _fmt(value)])
    rows += [[str(key), _fmt(v)] for key, v in provenance.items() if key not in dict(_PROVENANCE)]
    return _table(["", "value"], rows, text_columns=(0, 1)).replace(
        '<td class="text">', '<td class="text wrap">'
    )


def _rejected_section(metrics: dict) -> str:
    """The body of "Rejected rows" ("" when nothing was rejected): the counts by reason
    and by file of metrics' rejected_by_reason / rejected_by_file."""
    rows, files = metrics.get("rows_rejected") or 0, metrics.get("files_rejected") or 0
    if not rows and not files:
        return ""
    parts = [
        f'<p class="note">{_esc(_fmt(rows))} rows rejected'
        + (f", {_esc(_fmt(files))} files unreadable" if files else "")
        + "; each rejected row, with its values and reason, is in rejected/.</p>"
    ]
    for key, what in (("rejected_by_reason", "reason"), ("rejected_by_file", "file")):
        counts = metrics.get(key)
        if not counts:
            continue
        items = list(counts.items())
        shown = [(name, n) for name, n in items if name != "other"][:MAX_REJECTED_ROWS]
        rest = sum(int(n) for name, n in items) - sum(int(n) for _, n in shown)
        table_rows = [[str(name), _fmt(int(n))] for name, n in shown]
        if rest:
            table_rows.append([f"other {what}s", _fmt(rest)])
        parts.append(
            _table([what, "rows"], table_rows).replace(
                '<td class="text">', '<td class="text wrap">'
            )
        )
    return "".join(parts)


# ----------------------------------------------------------------------------- validation


def _check(
    metrics,
    centroids_original,
    features,
    sample,
    sample_labels,
    centroids_standardized,
    linkage,
    merge_map=None,
):
    """Validated arrays; a ValueError naming the argument on any shape mismatch."""
    c_orig = np.asarray(centroids_original, dtype=np.float64)
    if c_orig.ndim != 2 or c_orig.shape[0] < 1 or c_orig.shape[1] < 1:
        raise ValueError(f"centroids_original must be [K, D] with K, D >= 1, got {c_orig.shape}")
    k, d = c_orig.shape
    features = [str(f) for f in features]
    if len(features) != d:
        raise ValueError(f"features has {len(features)} names for D = {d} columns")
    c_std = np.asarray(centroids_standardized, dtype=np.float64)
    if c_std.shape != (k, d):
        raise ValueError(f"centroids_standardized must have shape {(k, d)}, got {c_std.shape}")
    x = np.asarray(sample, dtype=np.float64)
    if x.size == 0:
        x = x.reshape(0, d)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"sample must be [m, {d}], got {x.shape}")
    labels = np.asarray(sample_labels)
    if labels.shape != (len(x),):
        raise ValueError(f"sample_labels must have shape ({len(x)},), got {labels.shape}")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"sample_labels must be cluster ids in 0..{k - 1}")
    sizes = metrics.get("cluster_sizes")
    sizes = None if sizes is None else np.asarray(sizes, dtype=np.int64)
    if sizes is not None and sizes.shape != (k,):
        raise ValueError(f"metrics['cluster_sizes'] has {sizes.size} values for K = {k}")
    z = None
    if linkage is not None:
        from scipy.cluster.hierarchy import is_valid_linkage

        z = np.asarray(linkage, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != 4:
            raise ValueError(f"linkage must be a [n-1, 4] SciPy linkage, got shape {z.shape}")
        if len(z):
            is_valid_linkage(z, throw=True, name="linkage")
        if len(z) + 1 != k:
            raise ValueError(f"linkage has {len(z) + 1} leaves for K = {k}")
    groups = None
    if merge_map is not None:
        groups = np.asarray(merge_map)
        if groups.shape != (k,) or not np.issubdtype(groups.dtype, np.integer):
            raise ValueError(f"merge_map must be int [{k}], got {groups.dtype} {groups.shape}")
        groups = groups.astype(np.int64)
        if groups.min() < 0 or set(np.unique(groups)) != set(range(int(groups.max()) + 1)):
            raise ValueError("merge_map must map the clusters onto groups 0..G-1, each used")
    return c_orig, features, x, labels, c_std, sizes, z, groups


# ----------------------------------------------------------------------------- the report


def render_report(
    metrics: dict,
    centroids_original: np.ndarray,
    features: List[str],
    sample: np.ndarray,
    sample_labels: np.ndarray,
    centroids_standardized: np.ndarray,
    sweep: Optional[dict] = None,
    linkage: Optional[np.ndarray] = None,
    merge_map: Optional[np.ndarray] = None,
    provenance: Optional[dict] = None,
    distances: Optional[dict] = None,
) -> str:
    """The HTML text of a fit's report (UTF-8 text, one file, no external resource).

    metrics: the content of metrics.json: k, features, rows_read, rows_valid,
        rows_rejected, rounds, converged, inertia, inertia_history (list of float),
        cluster_sizes (list of K ints), seed; a missing summary key shows as "—".
        With "rejected_by_reason" / "rejected_by_file" ({str: int}, "other" the rest)
        a "Rejected rows" section lists them.
        With "restarts" (a list of {k, seed, sample_inertia, inertia, rounds,
        converged}, any of them missing) a "Candidates" table is added, the
        one matching k and init_seed marked; "restarts_on" says which rule chose.
    centroids_original: float64 [K, D], centroids in original units (centroids.csv).
    features: D feature names, in column order.
    sample: float64 [m, D], standardized rows (e.g. the init sample); m may be 0.
    sample_labels: int64 [m], the cluster of each sample row, in 0..K-1.
    centroids_standardized: float64 [K, D], centroids in standardized space
        (centroids.npy), the space of `sample`.
    sweep: optional {K (str or int): {"inertia": float, "silhouette": float, ...}};
        adds the "K sweep" section (a plot of inertia and silhouette by K, and a
        table of every value given).
    linkage: optional float64 [n-1, 4] SciPy linkage of fine clusters (e.g.
        `transforms.core.hierarchy.ward_linkage`); adds the "Cluster hierarchy" section.
    merge_map: optional int64 [K], fine cluster -> merged group 0..G-1 (--merge_to,
        hierarchy.json's fine_to_merged): every per-cluster colour becomes the group's,
        and the hierarchy section lists the groups.
    provenance: optional {"command": str, "version": str, "input": str, "files": int,
        "runner": str, "started": str (ISO 8601), "duration_seconds": float, ...}: the
        "Provenance" section, in that order; any other key is listed after them.
    distances: optional {"tail": float [Q] fractions of rows, "tail_quantiles": float
        [Q] the normalized distance above which they lie, "threshold": float or None},
        with metrics' "clusters" ([{id, size, radius}]): the "Cluster radii and
        anomalies" section (core.statistics.ClusterStats).

    Images: 4 (inertia, sizes, PCA, heatmap), 3 when at most MAX_TABLE_ROUNDS rounds
    (a table instead), +1 with `sweep`, +1 with a linkage of at least 2 leaves, +1
    with `distances`.
    Raises ValueError when shapes disagree.
    """
    c_orig, features, x, labels, c_std, sizes, z, groups = _check(
        metrics,
        centroids_original,
        features,
        sample,
        sample_labels,
        centroids_standardized,
        linkage,
        merge_map,
    )
    k, d = c_orig.shape
    parts = []

    def section(title: str, *body: str) -> None:
        parts.append(f"<section><h2>{_esc(title)}</h2>{''.join(body)}</section>")

    summary = [
        ("rows read", metrics.get("rows_read")),
        ("rows valid", metrics.get("rows_valid")),
        ("rows rejected", metrics.get("rows_rejected")),
        ("K", metrics.get("k", k)),
        ("rounds", metrics.get("rounds")),
        ("at most (--max_rounds)", metrics.get("max_rounds")),
        ("converged", metrics.get("converged")),
        ("inertia (standardized space)", metrics.get("inertia")),
        ("seed", metrics.get("seed")),
        ("features", ", ".join(features)),
    ]
    section(
        "Summary",
        _table(["", "value"], [[name, _fmt(v)] for name, v in summary], text_columns=(0, 1)),
    )

    if provenance is not None:
        section("Provenance", _provenance_table(provenance))

    rejected = _rejected_section(metrics)
    if rejected:
        section("Rejected rows", rejected)

    history = [_as_float(v) for v in metrics.get("inertia_history") or []]
    section("Inertia by round", _inertia_section(history, metrics.get("inertia")))

    if sizes is not None:
        section("Cluster sizes", _sizes_figure(sizes, groups))
    else:
        section("Cluster sizes", '<p class="note">metrics has no cluster_sizes.</p>')

    if distances is not None and metrics.get("clusters"):
        radii = np.array([_as_float(c.get("radius")) for c in metrics["clusters"]])
        threshold = distances.get("threshold")
        rule = (
            f"; rows above the dashed line (normalized distance {threshold:.3g}, the "
            f"{1 - metrics.get('contamination', 0):.4g} quantile) are anomalies "
            f"(--contamination {metrics.get('contamination')})"
            if threshold is not None
            else "; --contamination C flags the rows above the (1 - C) quantile"
        )
        section(
            "Cluster radii and anomalies",
            '<p class="note">'
            + _esc(
                "A cluster's radius is the RMS distance of its rows to its centroid (for "
                "cosine distance, their mean 1 - cos); a row's normalized distance is its "
                "distance over its cluster's radius. Right: the fraction of training rows "
                "whose normalized distance is above each value" + rule + "."
            )
            + "</p>",
            _distances_figure(radii, distances, groups),
        )

    shown = min(len(x), MAX_POINTS)
    section(
        "PCA projection of the sample",
        f'<p class="note">{_esc(f"{shown:,}")} of {_esc(f"{len(x):,}")} sample rows '
        f"(standardized space) in the first two principal components of the sample; "
        f"crosses are the centroids"
        + ("; colours are the merged groups (--merge_to)" if groups is not None else "")
        + ".</p>",
        _pca_figure(x, labels, c_std, groups),
    )

    if k * d <= MAX_TABLE_CELLS:
        table_rows = [[str(i)] + [_fmt(float(v)) for v in c_orig[i]] for i in range(k)]
        values, where = _table(["cluster"] + features, table_rows), "in the table below"
    else:
        values, where = "", "in centroids.csv"
    note = (
        "Colour: each feature's centroid values as z-scores across clusters (what sets a "
        "cluster apart); "
        + (
            "numbers: the centroids in original units, also "
            if k * d <= MAX_ANNOTATED_CELLS
            else "the centroids in original units are "
        )
        + where
        + "."
    )
    section(
        "Centroids by feature",
        f'<p class="note">{_esc(note)}</p>',
        _heatmap_figure(c_orig, features, sizes),
        values,
    )

    if sweep is not None:
        rows = _sweep_rows(sweep)
        keys = []
        for _, m in rows:
            keys += [key for key in m if key not in keys]
        keys = [key for key in ("inertia", "silhouette") if key in keys] + [
            key for key in keys if key not in ("inertia", "silhouette")
        ]
        sweep_table = _table(
            ["K"] + keys, [[str(kk)] + [_fmt(m.get(key)) for key in keys] for kk, m in rows]
        )
        section(
            "K sweep",
            _sweep_figure(rows, metrics.get("k", k))
            if rows
            else '<p class="note">The sweep is empty.</p>',
            sweep_table,
        )

    restarts = metrics.get("restarts") or []
    if restarts:
        chosen = (metrics.get("k", k), metrics.get("init_seed"))
        rows = [
            [
                _fmt(r.get("k")),
                _fmt(r.get("seed")),
                _fmt(r.get("sample_inertia")),
                _fmt(r.get("inertia")),
                _fmt(r.get("rounds")),
                _fmt(r.get("converged")),
                "chosen" if (r.get("k"), r.get("seed")) == chosen else "",
            ]
            for r in restarts
        ]
        rule = (
            "The start of each K with the lowest inertia on the init sample was fitted "
            "over all rows (--restarts_on sample)."
            if metrics.get("restarts_on", "all") == "sample"
            else "Every start was fitted over all rows in the same passes; the lowest final "
            "inertia of each K wins its restarts."
        )
        section(
            "Candidates",
            f'<p class="note">Every start: its K, seed, inertia on the init sample '
            f"(after the refinement there), and, if fitted over all rows, its rounds and "
            f"final inertia (all rows, standardized space). {_esc(rule)}</p>",
            _table(
                ["K", "seed", "sample inertia", "inertia", "rounds", "converged", ""],
                rows,
                text_columns=(6,),
            ),
        )

    if z is not None:
        if len(z):
            section(
                "Cluster hierarchy",
                '<p class="note">Size-weighted Ward merging of the fine clusters; '
                "height is the Ward distance, sqrt(2 x increase in within-cluster sum "
                "of squares)"
                + (
                    "; links and labels below the dashed --merge_to cut in the colour "
                    "of their merged group, as in every figure above, links above it grey"
                    if groups is not None
                    else ""
                )
                + ".</p>",
                _dendrogram_figure(z, groups),
                _groups_table(groups, sizes) if groups is not None else "",
            )
        else:
            section("Cluster hierarchy", '<p class="note">One cluster: nothing to merge.</p>')

    title = f"shardmeans fit report: K = {metrics.get('k', k)}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )


def write_report(path: str, html_text: str) -> None:
    """Write the report to `path` (local, gs://, any Beam filesystem) as UTF-8, uncompressed."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    # Explicitly uncompressed: AUTO would gzip a path ending in .gz, which no browser opens.
    with FileSystems.create(
        path, mime_type="text/html", compression_type=CompressionTypes.UNCOMPRESSED
    ) as f:
        f.write(html_text.encode("utf-8"))
