"""MirroredStrategy over 2 logical CPU devices against 1 device: the fused op (no
padding, halves of any length) and the XLA step (padded) give one device's results.
Prints "ok". Its own process: TensorFlow fixes its devices when it starts."""

import numpy as np

from transforms.step.step import KMeansStep

rng = np.random.default_rng(0)
x = rng.normal(size=(10001, 5)).astype(np.float32)
c = rng.normal(size=(6, 5)).astype(np.float32)
two = KMeansStep("cpu:2")
one = KMeansStep("cpu")
two_xla = KMeansStep("cpu:2", native=False)
assert two.n_replicas == 2 and one.n_replicas == 1 and two.native
for n in (10001, 1):  # uneven halves; a replica with no rows
    for a in (two(x[:n], c), two_xla(x[:n], c)):
        b = one(x[:n], c)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_allclose(a.sums, b.sums, rtol=1e-12)
        assert abs(a.inertia - b.inertia) <= 1e-9 * b.inertia
        np.testing.assert_array_equal(a.far_rows, b.far_rows)
print("ok")
