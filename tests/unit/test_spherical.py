"""--distance cosine in the core: the spherical update, start and sample inertia against
NumPy, and the rows without a direction the reader rejects."""

import json

import numpy as np
import pyarrow as pa

from transforms.core.lloyd import RoundState, lloyd_update
from transforms.core.partials import Partials
from transforms.core.seeding import initial_centroids, sample_inertia, spherical_lloyd


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _rows(n=2000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    directions = _unit(rng.normal(size=(4, d)))
    x = directions[rng.integers(0, 4, n)] + rng.normal(0, 0.2, (n, d))
    return _unit(x)


def test_spherical_update_is_the_normalized_sum():
    u = _rows()
    c = u[:3]
    labels = np.argmax(u @ c.T, axis=1)
    sums = np.stack([u[labels == j].sum(0) for j in range(3)])
    partials = Partials(
        sums, np.bincount(labels, minlength=3), 1.0, np.zeros(0), np.zeros((0, 5)), np.zeros(0, int)
    )
    new = lloyd_update(RoundState(c), partials, tol=0, spherical=True)
    np.testing.assert_allclose(new.centroids, _unit(sums), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(new.centroids, axis=1), 1.0)


def test_spherical_refinement_is_numpy_spherical_lloyd():
    u = _rows()
    start = initial_centroids(u, 4, "random", seed=1, spherical=True)
    refined = spherical_lloyd(u, start, rounds=10, tol=0)
    c = start
    for _ in range(10):
        labels = np.argmax(u @ c.T, axis=1)
        c = _unit(np.stack([u[labels == j].sum(0) for j in range(4)]))
    np.testing.assert_allclose(refined, c, atol=1e-12)
    expected = np.sum(1 - (u @ refined.T).max(axis=1))
    assert np.isclose(sample_inertia(u, refined, cosine=True), expected, rtol=1e-9)


def test_given_centroids_are_normalized_for_cosine():
    given = np.array([[3.0, 4.0], [0.0, -2.0]])
    got = initial_centroids(np.zeros((5, 2)), 2, "given", 0, given=given, spherical=True)
    np.testing.assert_allclose(got, [[0.6, 0.8], [0.0, -1.0]])


def test_rows_without_a_direction_are_rejected_with_the_reason():
    from pipeline.io.readers import Chunk
    from pipeline.io.validation import NO_DIRECTION, check_chunk

    batch = pa.RecordBatch.from_pydict({"a": [0.0, 1.0, 0.0], "b": [0.0, 0.0, float("nan")]})
    chunk = Chunk("f.csv", batch, np.arange(2, 5), [])
    checked = check_chunk(chunk, ["a", "b"], pa.schema([]), "__features__", directions=True)
    assert checked.valid.num_rows == 1
    reasons = [json.loads(line) for line in checked.rejected]
    assert [(r["row"], r["reason"]) for r in reasons] == [
        (2, NO_DIRECTION),
        (4, reasons[1]["reason"]),
    ]
    assert reasons[1]["column"] == "b"  # a NaN is named as such, not as a missing direction
    assert check_chunk(chunk, ["a", "b"], pa.schema([]), "__features__").valid.num_rows == 2
