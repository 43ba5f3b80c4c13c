"""Choosing the model: --n_init restarts and --k sweeps, fitted together in shared passes."""

import re

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from transforms.core.lloyd import Candidates, RoundState
from transforms.core.partials import Partials
from transforms.core.selection import select
from transforms.step.step import get_step

from conftest import assignments, centroids, fit, main, metrics, scaled_blobs, write_shards


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
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == 5
    scored = tmp_path / "scored"
    assert (
        main(
            [
                "score",
                "--model",
                str(out),
                "--input",
                pattern,
                "--output",
                str(scored),
                "--id_column",
                "id",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(assignments(scored).column("cluster_id").to_numpy(), labels)


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


@pytest.mark.parametrize(
    "args,message",
    [
        (("--k", "4,x"), "--k must be a whole number or a comma-separated list"),
        (("--k", "1,4"), "every K must be at least 2"),
        (("--k", "4,4"), "--k lists a K twice"),
        (("--k", "3", "--n_init", "0"), "--n_init must be at least 1"),
        (("--k", "3,5", "--merge_to", "4"), "--merge_to must be in 1..3 (the smallest --k)"),
        (("--k", "3", "--init_seed", "-1"), "--init_seed must be in [0, 2**32)"),
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


def test_step_scores_groups_of_different_k_in_one_call():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    groups = [x[:3].copy(), x[100:108].copy(), x[200:202].copy()]
    step = get_step()
    for c, together in zip(groups, step.groups(x, groups)):
        alone = step(x, c)
        np.testing.assert_array_equal(together.labels, alone.labels)
        np.testing.assert_array_equal(together.counts, alone.counts)
        np.testing.assert_allclose(together.sums, alone.sums, rtol=1e-12)
        assert together.sums.shape == (len(c), 4)
        assert together.inertia == pytest.approx(alone.inertia, rel=1e-12)
        np.testing.assert_array_equal(together.far_rows, alone.far_rows)
        # and against NumPy: nearest centroids, float64 sums, inertia
        d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
        np.testing.assert_array_equal(together.labels, d.argmin(1))
        for j in range(len(c)):
            np.testing.assert_allclose(
                together.sums[j], x[together.labels == j].sum(0, np.float64), rtol=1e-12, atol=1e-12
            )
        assert together.inertia == pytest.approx(d.min(1).sum(), rel=1e-6)


def test_rows_per_call_bounds_the_call_temporaries():
    from transforms.step.buffers import CALL_BUDGET_BYTES, call_bytes_per_row, rows_per_call

    assert rows_per_call(65536, [np.zeros((64, 32))] * 4) == 65536  # the default fit
    for groups in ([np.zeros((128, 8))] * 32, [np.zeros((8, 2000))] * 4):
        rows = rows_per_call(65536, groups)
        assert rows * call_bytes_per_row(groups) <= CALL_BUDGET_BYTES and rows & (rows - 1) == 0
        # The fused op keeps only its outputs per row: calls of millions of rows.
        rows = rows_per_call(65536, groups, fused=True)
        assert rows >= 1 << 19 and rows * call_bytes_per_row(groups, True) <= CALL_BUDGET_BYTES
    assert rows_per_call(1 << 26, [np.zeros((64, 32))], fused=True) == 1 << 26


def test_cached_shards_go_to_the_fused_op_in_large_calls():
    from transforms.step.buffers import rows_per_call
    from transforms.step.step import NATIVE_MAX_CENTROID_BYTES, KMeansStep

    native, xla = KMeansStep(native=True), KMeansStep(native=False)
    small = [np.zeros((64, 32), np.float32)] * 4
    large = [np.zeros((NATIVE_MAX_CENTROID_BYTES // (4 * 32) + 1, 32), np.float32)]
    assert native.rows_per_call(65536, small) >= 1 << 20
    # Past the op's bound: the XLA step's calls, whichever step.
    assert native.rows_per_call(65536, large) == xla.rows_per_call(65536, large)
    assert native.rows_per_call(65536, large) == rows_per_call(65536, large) < 65536
    assert xla.rows_per_call(65536, small) == 65536


def test_candidate_partials_merge_is_order_free():
    from transforms.beam.combiners import CandidatePartialsCombineFn

    rng = np.random.default_rng(2)
    x = rng.normal(size=(1200, 3)).astype(np.float32)
    groups = [x[:2].copy(), x[5:9].copy()]
    step = get_step()
    tuples = [
        tuple(Partials.from_batch(x[i : i + 300], r) for r in step.groups(x[i : i + 300], groups))
        for i in range(0, 1200, 300)
    ]
    fn = CandidatePartialsCombineFn(n_far=16)
    a = fn.merge_accumulators(
        [
            fn.add_input(fn.add_input(fn.create_accumulator(), tuples[0]), tuples[1]),
            fn.create_accumulator(),
            fn.add_input(fn.create_accumulator(), tuples[2]),
            tuples[3],
        ]
    )
    b = fn.extract_output(fn.merge_accumulators([tuples[3], tuples[1], tuples[2], tuples[0]]))
    whole = step.groups(x, groups)
    for got, other, ref in zip(a, b, whole):
        np.testing.assert_allclose(got.sums, ref.sums, rtol=1e-12)
        np.testing.assert_array_equal(got.counts, ref.counts)
        np.testing.assert_array_equal(got.far_rows, other.far_rows)
        assert got.inertia == pytest.approx(ref.inertia, rel=1e-9)
    assert fn.extract_output(fn.create_accumulator()) is None


def test_lloyd_update_fn_merges_in_any_order_then_updates():
    from transforms.beam.combiners import CandidatePartialsCombineFn
    from transforms.beam.rounds import LloydUpdateFn, ShardPartials
    from transforms.core.lloyd import update_candidates

    rng = np.random.default_rng(3)
    x = rng.normal(size=(900, 3)).astype(np.float32)
    candidates = Candidates(
        (RoundState(x[:3].astype(np.float64)), RoundState(x[10:14].astype(np.float64))), (0, 1)
    )
    groups = [s.centroids.astype(np.float32) for s in candidates.states]
    shards = [
        ShardPartials(
            candidates,
            tuple(
                Partials.from_batch(x[i : i + 300], r)
                for r in get_step().groups(x[i : i + 300], groups)
            ),
        )
        for i in range(0, 900, 300)
    ]
    fn = LloydUpdateFn(n_far=16, tol=1e-4)
    one = fn.extract_output(
        fn.merge_accumulators(
            [
                fn.add_input(fn.create_accumulator(), shards[2]),
                fn.create_accumulator(),
                fn.add_input(fn.add_input(fn.create_accumulator(), shards[0]), shards[1]),
            ]
        )
    )
    merged = CandidatePartialsCombineFn(16).merge_accumulators([s.partials for s in shards])
    expected = update_candidates(candidates, merged, 1e-4)
    for got, ref in zip(one.states, expected.states):
        np.testing.assert_allclose(got.centroids, ref.centroids, rtol=1e-12)
        assert got.rounds == 1 and got.inertia_history == pytest.approx(ref.inertia_history)


def _candidate(k, inertia):
    state = RoundState(centroids=np.zeros((k, 2)), rounds=3, converged=True)
    part = Partials(
        np.zeros((k, 2)),
        np.ones(k, np.int64),
        inertia,
        np.zeros(0),
        np.zeros((0, 2), np.float32),
        np.zeros(0, np.int64),
    )
    return state, part


def test_select_lowest_inertia_restart_then_best_k():
    x, _ = make_blobs(600, 2, centers=[[-5, 0], [5, 0], [0, 8]], cluster_std=0.5, random_state=1)
    rows = [(2, 900.0), (2, 800.0), (3, 100.0), (3, 99.0)]
    states, parts = zip(*[_candidate(k, inertia) for k, inertia in rows])
    from sklearn.cluster import KMeans

    centers = {k: KMeans(k, n_init=5, random_state=0).fit(x).cluster_centers_ for k in (2, 3)}
    states = [s._replace(centroids=centers[len(s.centroids)]) for s in states]
    chosen = select(Candidates(tuple(states), (0, 1, 0, 1)), parts, x, "silhouette")
    assert chosen.index == 3 and chosen.seed == 1 and len(chosen.state.centroids) == 3
    assert [row["k"] for row in chosen.sweep] == [2, 3]
    assert chosen.sweep[0]["inertia"] == 800.0
    # One K: no scores, the lowest inertia wins; ties go to the first restart.
    tie = select(Candidates(tuple(states[:2]), (0, 1)), (parts[0], parts[0]), x)
    assert tie.index == 0 and tie.sweep is None
    with pytest.raises(ValueError, match="criterion 'inertia'"):
        select(Candidates(tuple(states), (0, 1, 0, 1)), parts, x, "inertia")
