"""--merge_to (Ward merge of fine clusters) and report.html, through the fit job. A
--merge_to above K is refused: tests/integration/test_model_choice.py."""

import json
import re

import numpy as np
import pyarrow as pa
import tensorflow as tf
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from pipeline.cli import main

from helpers import assignments, fit, metrics, write_shards


def _images(out) -> int:
    return len(re.findall(r'<img src="data:image/png;base64,', (out / "report.html").read_text()))


def test_ward_merge_recovers_the_blobs(tmp_path):
    x, truth = make_blobs(4000, 3, centers=4, cluster_std=0.5, center_box=(-20, 20), random_state=6)
    table = pa.table({"id": np.arange(len(x)), **{f"f{j}": x[:, j] for j in range(3)}})
    pattern = write_shards(table, tmp_path / "in", "parquet", shards=2)
    out = tmp_path / "out"
    assert (
        fit(
            out,
            "--input",
            pattern,
            "--k",
            40,
            "--merge_to",
            4,
            "--id_column",
            "id",
            "--max_rounds",
            15,
        )
        == 0
    )

    merged = assignments(out).column("merged_cluster_id").to_numpy()
    assert adjusted_rand_score(truth, merged) >= 0.99
    hierarchy = json.loads((out / "hierarchy.json").read_text())
    assert len(hierarchy["linkage"]) == 39 and len(hierarchy["fine_to_merged"]) == 40
    fine = assignments(out).column("cluster_id").to_numpy()
    np.testing.assert_array_equal(np.array(hierarchy["fine_to_merged"])[fine], merged)
    assert sum(metrics(out)["merged_cluster_sizes"]) == 4000
    # Every fit writes report.html: the plain four (inertia a table, not a figure, after
    # one or two rounds), and here the dendrogram.
    assert _images(out) == (5 if metrics(out)["rounds"] <= 2 else 6)
    html = (out / "report.html").read_text()
    for title in ("Inertia by round", "Cluster sizes", "PCA projection", "Centroids by feature"):
        assert title in html

    model = tf.saved_model.load(str(out / "model" / "1"))
    served = model.signatures["predict_raw"](
        **{f"f{j}": tf.constant(x[:50, j], tf.float32) for j in range(3)}
    )
    np.testing.assert_array_equal(served["merged_cluster_id"].numpy(), merged[:50])

    # scoring with a merged model carries the merged id too
    assert (
        main(
            [
                "score",
                "--model",
                str(out),
                "--input",
                pattern,
                "--output",
                str(tmp_path / "scored"),
                "--id_column",
                "id",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        assignments(tmp_path / "scored").column("merged_cluster_id"), merged
    )
