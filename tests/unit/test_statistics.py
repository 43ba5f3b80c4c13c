"""Cluster statistics in the core: radii, normalized distances, and the quantile sketch
behind the anomaly threshold, against NumPy."""

import pickle

import numpy as np
import pytest

from transforms.core.statistics import (
    TAIL_PROBABILITIES,
    ClusterStats,
    ClusterTotals,
    QuantileSketch,
    add_totals,
    cluster_radii,
    normalized_distances,
)


def test_radii_are_rms_distances_and_mean_cosine_distances():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 1000)
    sq = rng.exponential(size=1000).astype(np.float32)
    halves = [
        ClusterTotals.of_rows(labels[s], sq[s], 4, False) for s in (slice(0, 400), slice(400, None))
    ]
    totals = add_totals(halves)
    expected = [np.sqrt(np.mean(sq[labels == j].astype(np.float64))) for j in range(3)]
    np.testing.assert_allclose(cluster_radii(totals, cosine=False)[:3], expected, rtol=1e-12)
    assert cluster_radii(totals, cosine=False)[3] == 0.0  # empty
    cosine = cluster_radii(ClusterTotals.of_rows(labels, sq, 3, True), cosine=True)
    np.testing.assert_allclose(cosine, [np.mean(sq[labels == j] / 2.0) for j in range(3)])


def test_normalized_distance_and_a_cluster_of_identical_rows():
    d = np.array([1.0, 2.0, 0.0, 0.5], np.float32)
    labels = np.array([0, 0, 1, 1])
    out = normalized_distances(d, labels, np.array([2.0, 0.0]))
    np.testing.assert_array_equal(out, [0.5, 1.0, 0.0, np.inf])


@pytest.mark.parametrize("contamination", [1e-4, 1e-3, 0.01, 0.1, 0.5])
def test_threshold_from_merged_shard_sketches_is_the_tail_quantile(contamination):
    """The threshold read from the table equals NumPy's (1 - C) quantile within the
    sketch's error, whatever the order the shards' sketches merge in."""
    rng = np.random.default_rng(1)
    values = rng.lognormal(size=400_000).astype(np.float32)
    shards = [QuantileSketch().update(part) for part in np.array_split(values, 7)]
    forward, backward = QuantileSketch(), QuantileSketch()
    for s in shards:
        forward.merge(pickle.loads(pickle.dumps(s)))  # as a runner moves accumulators
    for s in reversed(shards):
        backward.merge(s)
    assert forward.n == backward.n == len(values)
    stats = ClusterStats(np.zeros(1), np.zeros(1), TAIL_PROBABILITIES, forward.tail_quantiles())
    got = stats.threshold(contamination)
    flagged = np.mean(values > got)
    # REQ's rank error is relative to the distance from the top: a few % of C here.
    assert abs(flagged - contamination) <= 0.05 * contamination + 2 / len(values), flagged
    other = ClusterStats(np.zeros(1), np.zeros(1), TAIL_PROBABILITIES, backward.tail_quantiles())
    assert abs(np.mean(values > other.threshold(contamination)) - flagged) <= 0.05 * contamination
