"""The fused step op (transforms/step/native/nearest_centroids.cc) against TensorFlow's own
ops and NumPy, in this process (`steps`, tests/conftest.py: the op must build here). Its
builds, fall-backs and thread counts, each in a process of its own, are in
tests/integration/test_native_op_processes.py, which also runs this module's result tests
against every narrower build."""

import concurrent.futures

import numpy as np
import pytest

from transforms.step.native import build as native_op
from transforms.step.step import KMeansStep

from helpers import many_units_case


@pytest.mark.parametrize(
    "n,d,ks",
    [
        (1, 3, [2]),
        (255, 5, [7]),
        (4099, 6, [7]),
        (3000, 33, [70]),  # several register tiles of centroids; D not a multiple of the lanes
        (2000, 4, [3, 8, 2]),  # groups of different K in one call (padding centroids)
        (70000, 16, [64, 64, 64, 64]),  # more rows than a work unit; restarts together
    ],
)
def test_fused_op_equals_tensorflow_ops_and_numpy(steps, n, d, ks):
    native, xla = steps
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    groups = [rng.normal(size=(k, d)).astype(np.float32) for k in ks]
    for c, got, ref in zip(groups, native.groups(x, groups), xla.groups(x, groups)):
        dist = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
        labels = dist.argmin(1)
        np.testing.assert_array_equal(got.labels, labels)
        np.testing.assert_array_equal(got.labels, ref.labels)
        np.testing.assert_allclose(got.sq_dist, dist.min(1), rtol=1e-5, atol=1e-6)
        sums = np.zeros_like(c, dtype=np.float64)
        np.add.at(sums, labels, x.astype(np.float64))
        np.testing.assert_allclose(got.sums, sums, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.sums, ref.sums, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(got.counts, np.bincount(labels, minlength=len(c)))
        assert got.inertia == pytest.approx(dist.min(1).sum(), rel=1e-6)
        assert got.inertia == pytest.approx(ref.inertia, rel=1e-6)
        np.testing.assert_array_equal(got.far_rows, ref.far_rows)
        np.testing.assert_array_equal(got.far_labels, labels[got.far_rows])
        np.testing.assert_array_equal(got.far_sq_dist, got.sq_dist[got.far_rows])
        np.testing.assert_allclose(got.far_sq_dist, ref.far_sq_dist, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,d,ks", [(1, 3, [2]), (5000, 33, [70, 5]), (70000, 16, [64, 64])])
def test_without_per_row_results_the_partials_are_the_same(steps, n, d, ks):
    """per_row=False (a round's call): no labels or distances, the same sums, counts,
    inertia and far rows, from both steps."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    groups = [rng.normal(size=(k, d)).astype(np.float32) for k in ks]
    for step in steps:
        for full, lean in zip(step.groups(x, groups), step.groups(x, groups, per_row=False)):
            assert lean.labels is None and lean.sq_dist is None
            np.testing.assert_array_equal(lean.sums, full.sums)
            np.testing.assert_array_equal(lean.counts, full.counts)
            assert lean.inertia == full.inertia
            for field in ("far_rows", "far_sq_dist", "far_labels"):
                np.testing.assert_array_equal(getattr(lean, field), getattr(full, field))


def test_fused_op_takes_the_first_centroid_on_ties(steps):
    """Exact ties: the first nearest centroid wins, and equally far rows keep row order."""
    native, xla = steps
    x = np.zeros((300, 4), np.float32)
    x[:, 0] = np.repeat([0.0, 2.0, -2.0], 100)
    # centroid 1 repeats centroid 0; rows at 0 are equally far from centroids 0, 1 and 2
    c = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [-1, 0, 0, 0], [0, 1, 0, 0]], np.float32)
    got, ref = native(x, c), xla(x, c)
    np.testing.assert_array_equal(got.labels, np.repeat([0, 0, 2], 100))
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_array_equal(got.far_rows, ref.far_rows)
    np.testing.assert_array_equal(got.far_rows, np.arange(16))  # all at distance 1: row order


def test_concurrent_calls_share_the_pool_and_each_gets_its_own_results(steps):
    """Calls from several threads at once (a worker's Beam threads, or the replicas of
    a strategy) each get what the same call alone returns."""
    x, groups = many_units_case()
    native = steps[0]
    calls = [(x[i * 7000 :], groups[i:]) for i in range(3)]
    alone = [native.groups(rows, cs) for rows, cs in calls]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda call: native.groups(*call), calls * 2))
    for got, want in zip(together, alone * 2):
        for a, b in zip(got, want):
            for field in a._fields:
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_a_library_that_registers_no_op_is_not_used(tmp_path, monkeypatch, caplog):
    """A build whose op did not register (the C API's registration failed) falls back
    to TensorFlow's ops with the reason in the log, instead of failing at first call."""
    source = tmp_path / "no_op.cc"
    source.write_text('extern "C" int shardmeans_no_op() { return 0; }\n')
    monkeypatch.setattr(native_op, "SOURCE", source)
    monkeypatch.setenv("SHARDMEANS_CACHE_DIR", str(tmp_path / "cache"))
    assert native_op.load.__wrapped__() is None  # past the per-process cache of load()
    assert "registered no ShardmeansNearestCentroids op" in caplog.text


def test_centroid_sets_past_the_cache_bound_go_to_the_xla_step(steps):
    from transforms.step.step import NATIVE_MAX_CENTROID_BYTES

    native, xla = steps
    rng = np.random.default_rng(1)
    d = 64
    k = NATIVE_MAX_CENTROID_BYTES // (4 * d) + 1
    small, large = np.zeros((1, 64, d), np.float32), np.zeros((1, k, d), np.float32)
    assert native.fused_for(small) and not native.fused_for(large)
    assert not xla.fused_for(small)
    x = rng.normal(size=(300, d)).astype(np.float32)
    c = rng.normal(size=(k, d)).astype(np.float32)
    got = native(x, c)
    np.testing.assert_array_equal(
        got.labels, ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1).argmin(1)
    )


def test_no_far_rows_asked_for():
    x = np.random.default_rng(2).normal(size=(500, 3)).astype(np.float32)
    got, ref = (KMeansStep(n_far=0, native=native)(x, x[:4]) for native in (True, False))
    assert len(got.far_rows) == len(ref.far_rows) == 0
    np.testing.assert_array_equal(got.counts, ref.counts)
