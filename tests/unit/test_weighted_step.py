"""The step with row weights, the fused op and TensorFlow's ops alike, against NumPy: the
weighted sums, weight sums and inertia; weights of 1 give the unweighted outputs bit for
bit; a row of weight 0 is labelled and counted but never a far row."""

import numpy as np
import pytest

from transforms.core.partials import Partials


@pytest.mark.parametrize(
    "n,d,ks",
    [(1, 3, [2]), (255, 5, [7]), (5000, 33, [70, 5]), (70000, 16, [64, 64])],
)
def test_weighted_step_equals_numpy(steps, n, d, ks):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.integers(0, 4, n).astype(np.float32) * np.float32(0.75)
    groups = [rng.normal(size=(k, d)).astype(np.float32) for k in ks]
    native, xla = steps
    for step in (native, xla):
        plain = step.groups(x, groups)
        for c, got, ref in zip(groups, step.groups(x, groups, weights=w), plain):
            labels = ref.labels
            np.testing.assert_array_equal(got.labels, labels)
            np.testing.assert_array_equal(got.counts, ref.counts)  # rows, whatever the weights
            sums = np.zeros((len(c), d))
            np.add.at(sums, labels, x.astype(np.float64) * w[:, None])
            np.testing.assert_allclose(got.sums, sums, rtol=1e-12, atol=1e-10)
            np.testing.assert_allclose(got.weights, np.bincount(labels, w, len(c)), rtol=1e-12)
            expected = float(np.sum(ref.sq_dist.astype(np.float64) * w))
            assert got.inertia == pytest.approx(expected, rel=1e-6)
            # far rows: of positive weight, or marked -1 like padding
            far_w = w[got.far_rows]
            assert (got.far_sq_dist[far_w == 0] == -1).all()
            part = Partials.from_batch(x, got, w=w)
            assert (part.far_weights > 0).all()
            np.testing.assert_array_equal(part.far_weights, w[got.far_rows][far_w > 0])
    for a, b in zip(native.groups(x, groups, weights=w), xla.groups(x, groups, weights=w)):
        np.testing.assert_allclose(a.sums, b.sums, rtol=1e-12, atol=1e-10)
        np.testing.assert_array_equal(a.far_rows, b.far_rows)


@pytest.mark.parametrize("per_row", [True, False])
def test_weights_of_one_are_the_unweighted_step_bit_for_bit(steps, per_row):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9000, 12)).astype(np.float32)
    groups = [rng.normal(size=(k, 12)).astype(np.float32) for k in (9, 4)]
    for step in steps:
        ones = step.groups(x, groups, per_row=per_row, weights=np.ones(len(x), np.float32))
        for a, b in zip(step.groups(x, groups, per_row=per_row), ones):
            assert a.weights is None
            np.testing.assert_array_equal(b.weights, a.counts.astype(np.float64))
            np.testing.assert_array_equal(a.sums, b.sums)
            assert a.inertia == b.inertia
            for field in ("counts", "far_rows", "far_sq_dist", "far_labels"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
