"""Choosing the model: --n_init restarts and --k sweeps, fitted together in shared passes,
through the fit job. Its pieces on their own (the grouped step, the candidates' combiners,
select()) are in tests/unit/test_candidates.py."""

import re

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from pipeline.cli import main

from helpers import assignments, centroids, fit, metrics, scaled_blobs, write_shards


@pytest.fixture(scope="module")
def ambiguous_parquet(tmp_path_factory):
    """10 overlapping blobs fitted with K=5: different starts end in different optima."""
    return write_shards(
        scaled_blobs(3000, 3, 10, seed=3, cluster_std=1.5),
        tmp_path_factory.mktemp("ambiguous"),
        "parquet",
        shards=2,
    )


@pytest.fixture(scope="module")
def four_blobs():
    x, truth = make_blobs(2400, 3, centers=4, cluster_std=0.6, center_box=(-15, 15), random_state=4)
    return x * [1.0, 50.0, 0.01], truth  # columns in different units


# No refinement on the sample: the full passes do all of the Lloyd work (the three
# restarts converge in 5 to 9 rounds).
RESTARTS = (
    "--k",
    5,
    "--id_column",
    "id",
    "--seed",
    5,
    "--init_refine_rounds",
    0,
    "--max_rounds",
    15,
    "--tol",
    0,
)


@pytest.fixture(scope="module")
def each_restart_alone(ambiguous_parquet, tmp_path_factory):
    """Restarts 0..2 of RESTARTS, each fitted alone (--n_init 1 --init_seed 5+r): (dirs, metrics)."""
    dirs = [tmp_path_factory.mktemp(f"alone{r}") for r in range(3)]
    for r, out in enumerate(dirs):
        assert (
            fit(out, "--input", ambiguous_parquet, *RESTARTS, "--n_init", 1, "--init_seed", 5 + r)
            == 0
        )
    alone = [metrics(out) for out in dirs]
    inertias = [m["inertia"] for m in alone]
    assert max(inertias) > min(inertias) * 1.01, "the restarts should reach different optima"
    return dirs, alone


def test_restarts_on_all_rows_match_each_restart_alone(
    ambiguous_parquet, each_restart_alone, tmp_path
):
    dirs, alone = each_restart_alone
    out = tmp_path / "together"
    assert (
        fit(out, "--input", ambiguous_parquet, *RESTARTS, "--n_init", 3, "--restarts_on", "all")
        == 0
    )
    together = metrics(out)
    inertias = [m["inertia"] for m in alone]
    assert together["inertia"] <= min(inertias) * (1 + 1e-6)
    # Each restart took the same path as when it ran alone.
    assert [r["seed"] for r in together["restarts"]] == [5, 6, 7]
    for restart, single in zip(together["restarts"], alone):
        assert restart["carried"]
        assert restart["inertia"] == pytest.approx(single["inertia"], rel=1e-6)
        assert restart["rounds"] == single["rounds"]
    best = int(np.argmin(inertias))
    assert together["init_seed"] == 5 + best
    np.testing.assert_allclose(centroids(out), centroids(dirs[best]), atol=1e-5)
    assert together["n_init"] == 3 and together["restarts_on"] == "all"


def test_restarts_on_the_sample_carry_the_best_start(
    ambiguous_parquet, each_restart_alone, tmp_path, capsys
):
    dirs, alone = each_restart_alone
    out = tmp_path / "sample"
    assert fit(out, "--input", ambiguous_parquet, *RESTARTS, "--n_init", 3) == 0
    m = metrics(out)
    assert m["restarts_on"] == "sample" and [r["seed"] for r in m["restarts"]] == [5, 6, 7]
    # The 3000 rows are all in the init sample, and the starts are not refined on it,
    # so a start's sample inertia is the first full round's inertia when it runs alone.
    sample_inertias = [r["sample_inertia"] for r in m["restarts"]]
    np.testing.assert_allclose(sample_inertias, [a["inertia_history"][0] for a in alone], rtol=1e-6)
    best = int(np.argmin(sample_inertias))
    assert [r["carried"] for r in m["restarts"]] == [r == best for r in range(3)]
    left = [r for r in m["restarts"] if not r["carried"]]
    assert all("inertia" not in r and "rounds" not in r for r in left)
    # The carried start is fitted exactly as when it runs alone.
    assert m["init_seed"] == 5 + best and m["restarts"][best]["rounds"] == alone[best]["rounds"]
    assert m["inertia"] == pytest.approx(alone[best]["inertia"], rel=1e-6)
    np.testing.assert_allclose(centroids(out), centroids(dirs[best]), atol=1e-5)
    assert f"seed {5 + best}, the best of 3 starts on the init sample" in capsys.readouterr().out
    assert "sample inertia" in (out / "report.html").read_text()


@pytest.mark.parametrize("criterion", ["silhouette", "davies_bouldin"])
def test_sweep_picks_the_known_k(four_blobs, tmp_path, capsys, criterion):
    x, truth = four_blobs
    table = pa.table({"id": np.arange(len(x)), **{f"f{j}": x[:, j] for j in range(3)}})
    pattern = write_shards(table, tmp_path / "in", "parquet", shards=2)
    out = tmp_path / "out"
    assert (
        fit(
            out,
            "--input",
            pattern,
            "--k",
            "6,2,3,4,5",
            "--select",
            criterion,
            "--n_init",
            2,
            "--id_column",
            "id",
            "--max_rounds",
            10,
        )
        == 0
    )

    m = metrics(out)
    assert m["k"] == 4 and m["select"] == criterion
    assert f"chosen: K=4 by {criterion} (2: " in capsys.readouterr().out
    assert sorted(m["sweep"], key=int) == ["2", "3", "4", "5", "6"]
    for scores in m["sweep"].values():
        assert set(scores) == {"inertia", "silhouette", "calinski_harabasz", "davies_bouldin"}
    # The other criteria agree on these blobs.
    assert max(m["sweep"], key=lambda k: m["sweep"][k]["calinski_harabasz"]) == "4"
    assert min(m["sweep"], key=lambda k: m["sweep"][k]["davies_bouldin"]) == "4"
    assert len(m["restarts"]) == 10  # 5 Ks x 2 restarts
    assert m["inertia"] == pytest.approx(m["sweep"]["4"]["inertia"], rel=1e-9)

    # Every other output is the chosen K's.
    assert centroids(out).shape == (4, 3)
    assert len(m["cluster_sizes"]) == 4 and sum(m["cluster_sizes"]) == len(x)
    labels = assignments(out).column("cluster_id").to_numpy()
    assert adjusted_rand_score(truth, labels) >= 0.99
    html = (out / "report.html").read_text()
    assert "K sweep" in html and "Candidates" in html and html.count(">chosen<") == 1
    images = 6 if m["rounds"] > 2 else 5  # one or two rounds: inertia a table, not a figure
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == images
    # The model is the chosen K's too: test_sweep_with_merge scores with a sweep's model.


def test_sweep_with_merge(four_blobs, tmp_path):
    x, truth = four_blobs
    table = pa.table({"id": np.arange(len(x)), **{f"f{j}": x[:, j] for j in range(3)}})
    pattern = write_shards(table, tmp_path / "in", "parquet", shards=1)
    out = tmp_path / "out"
    assert (
        fit(
            out,
            "--input",
            pattern,
            "--k",
            "8,12",
            "--merge_to",
            4,
            "--id_column",
            "id",
            "--max_rounds",
            10,
        )
        == 0
    )  # and the default 4 restarts of each K
    m = metrics(out)
    assert m["k"] in (8, 12) and len(m["merged_cluster_sizes"]) == 4
    assert m["n_init"] == 4 and len(m["restarts"]) == 8
    merged = assignments(out).column("merged_cluster_id").to_numpy()
    assert adjusted_rand_score(truth, merged) >= 0.99
    # The model is the chosen K's: scoring with it gives the fit's assignments.
    scored = tmp_path / "scored"
    argv = ["score", "--model", str(out), "--input", pattern, "--output", str(scored)]
    assert main([*argv, "--id_column", "id"]) == 0
    for column in ("cluster_id", "merged_cluster_id"):
        np.testing.assert_array_equal(
            assignments(scored).column(column), assignments(out).column(column)
        )


@pytest.mark.parametrize(
    "args,message",
    [
        (("--k", "4,x"), "--k must be a whole number or a list of them"),
        (("--k", "1,4"), "every K must be at least 2"),
        (("--k", "4,4"), "--k lists a K twice"),
        (("--k", "3", "--n_init", "0"), "--n_init must be at least 1"),
        (("--k", "3,5", "--merge_to", "4"), "--merge_to must be in 1..3 (the smallest K)"),
        (("--k", "3", "--init_seed", "-1"), "--init_seed must be at least 0, got -1"),
    ],
)
def test_bad_choice_flags(blob_parquet, tmp_path, capsys, args, message):
    assert fit(tmp_path / "out", "--input", blob_parquet, *args) == 2
    assert message in capsys.readouterr().err


def test_sweep_with_a_k_above_the_valid_rows(tmp_path, capsys):
    table = pa.table({"id": np.arange(6), "f0": np.arange(6.0), "f1": np.arange(6.0) ** 2})
    pattern = write_shards(table, tmp_path / "in", "parquet", shards=1)
    assert fit(tmp_path / "out", "--input", pattern, "--k", "2,7", "--id_column", "id") == 2
    assert "--k 7 is larger than the number of valid rows (6)" in capsys.readouterr().err


def test_given_centroids_take_no_restarts(blob_parquet, tmp_path, capsys):
    path = tmp_path / "c.npy"
    np.save(path, np.zeros((3, 5), np.float32))
    assert (
        fit(tmp_path / "out", "--input", blob_parquet, "--k", 3, "--init", path, "--n_init", 2) == 2
    )
    assert "takes neither a --k list nor --n_init above 1" in capsys.readouterr().err
