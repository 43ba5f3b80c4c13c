"""Cluster statistics and anomalies end to end: radii and normalized distances against
NumPy on the assignments, planted outliers found, the model and `score` agreeing."""

import numpy as np
import pyarrow as pa
import pytest

from helpers import assignments, fit, metrics, score, write_shards

N, OUTLIERS = 6000, 60


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(fit output, truth: bool [N] planted outlier, input pattern, rows float64 [N, 3]):
    3 blobs and 1% far rows."""
    base = tmp_path_factory.mktemp("anomalies")
    rng = np.random.default_rng(7)
    centers = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], np.float64)
    x = centers[rng.integers(0, 3, N)] + rng.normal(0, 1.0, (N, 3))
    truth = np.zeros(N, bool)
    far = rng.choice(N, OUTLIERS, replace=False)
    truth[far] = True
    # 8 standard deviations off their blob, away from the others (the blobs lie in f2 = 0)
    x[far] = centers[rng.integers(0, 3, OUTLIERS)] + [0, 0, 8] * rng.choice([-1, 1], (OUTLIERS, 1))
    table = pa.table({"id": np.arange(N), "f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2]})
    pattern = write_shards(table, base / "in", "parquet", shards=4)
    out = base / "out"
    args = ["--input", pattern, "--k", 3, "--id_column", "id", "--contamination", 0.01]
    assert fit(out, *args, "--max_rounds", 20, "--seed", 1) == 0
    return out, truth, pattern, x


def test_radii_and_normalized_distances_are_numpy_on_the_assignments(planted):
    out = planted[0]
    table = assignments(out)
    labels = table.column("cluster_id").to_numpy()
    d = table.column("distance").to_numpy().astype(np.float64)
    m = metrics(out)
    radii = np.array([c["radius"] for c in m["clusters"]])
    expected = [np.sqrt(np.mean(d[labels == j] ** 2)) for j in range(3)]
    np.testing.assert_allclose(radii, expected, rtol=1e-5)
    assert [c["size"] for c in m["clusters"]] == m["cluster_sizes"]
    np.testing.assert_allclose(
        table.column("normalized_distance").to_numpy(), d / radii[labels], rtol=1e-5
    )
    normalized = d / radii[labels]
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        # within the sketch's rank error: the value lies between nearby exact quantiles
        low, high = np.quantile(normalized, [q - 0.005, min(q + 0.005, 1.0)])
        assert low <= m["normalized_distance"][name] <= high, name


def test_planted_outliers_are_flagged_at_their_contamination(planted):
    out, truth = planted[:2]
    table = assignments(out)
    flagged = table.column("is_anomaly").to_numpy(zero_copy_only=False)
    found = flagged & truth[table.column("id").to_numpy()]
    precision, recall = found.sum() / flagged.sum(), found.sum() / truth.sum()
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert abs(flagged.mean() - 0.01) <= 0.002
    m = metrics(out)
    assert m["contamination"] == 0.01
    normalized = table.column("normalized_distance").to_numpy()
    np.testing.assert_array_equal(flagged, normalized > np.float32(m["anomaly_threshold"]))


def test_the_model_and_score_flag_the_same_rows(planted, tmp_path):
    import tensorflow as tf

    out, _, pattern, rows = planted
    table = assignments(out)
    x = rows[table.column("id").to_numpy()]
    model = tf.saved_model.load(str(out / "model" / "1"))
    served = {k: v.numpy() for k, v in model.assign_batch(x).items()}
    np.testing.assert_array_equal(served["is_anomaly"], table.column("is_anomaly").to_numpy(False))
    np.testing.assert_allclose(
        served["normalized_distance"], table.column("normalized_distance").to_numpy(), rtol=1e-5
    )

    assert score(out, tmp_path / "scored", "--input", pattern, "--id_column", "id") == 0
    scored = assignments(tmp_path / "scored")
    np.testing.assert_array_equal(
        scored.column("is_anomaly").to_numpy(False), table.column("is_anomaly").to_numpy(False)
    )
    # an override: the threshold at 5% from the training distribution the model keeps
    args = ("--input", pattern, "--id_column", "id", "--contamination", 0.05)
    assert score(out, tmp_path / "five", *args) == 0
    five = assignments(tmp_path / "five").column("is_anomaly").to_numpy(zero_copy_only=False)
    assert abs(five.mean() - 0.05) <= 0.005


def test_score_warns_of_drift_on_shifted_data_only(planted, tmp_path, capsys):
    """Fresh rows from the training distribution: no warning; the same rows shifted far
    from every cluster: the warning, with the figures behind it in metrics.json."""
    out, _, _, rows = planted
    rng = np.random.default_rng(11)
    centers = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], np.float64)
    fresh = centers[rng.integers(0, 3, 2000)] + rng.normal(0, 1.0, (2000, 3))
    for name, x in (("fresh", fresh), ("shifted", fresh + [0, 0, 25])):
        table = pa.table({"id": np.arange(len(x)), **{f"f{j}": x[:, j] for j in range(3)}})
        pattern = write_shards(table, tmp_path / name, "parquet", shards=2)
        capsys.readouterr()
        assert score(out, tmp_path / f"{name}-out", "--input", pattern, "--id_column", "id") == 0
        drift = metrics(tmp_path / f"{name}-out")["drift"]
        err = capsys.readouterr().err
        assert drift["rows"] == 2000 and drift["contamination"] == 0.01
        assert len(drift["cluster_shares"]) == len(drift["training_cluster_shares"]) == 3
        if name == "fresh":
            assert drift["warning"] is None and "warning" not in err
            assert drift["anomaly_rate"] < 0.03
        else:
            assert "off the training distribution" in drift["warning"]
            assert f"warning: {drift['warning']}" in err
            assert drift["anomaly_rate"] > 0.9
