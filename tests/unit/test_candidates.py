"""The pieces that choose the model, on their own: the step scoring groups of different K
in one call, rows per call, the candidates' combiners and the round's update in any
order, select(). The restarts and sweeps through the fit job are in
tests/integration/test_model_choice.py."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from transforms.core.lloyd import Candidates, RoundState
from transforms.core.partials import Partials
from transforms.core.selection import select
from transforms.step.step import get_step


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
