"""The pieces of transforms/ on their own: step, partials, sample, update."""

import numpy as np
import pytest

from transforms.beam.combiners import BottomSampleFn, PartialsCombineFn
from transforms.core.lloyd import RoundState, lloyd_update
from transforms.core.partials import Partials, merge
from transforms.core.sampling import row_hashes
from transforms.step.step import get_step

from helpers import run_check


def _data(n=5000, d=6, k=7, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(dtype), rng.normal(size=(k, d)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 255, 256, 1000, 4099])
def test_step_equals_numpy(n):
    x, c = _data(n)
    r = get_step()(x, c)
    d = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    labels = d.argmin(1)
    np.testing.assert_array_equal(r.labels, labels)
    np.testing.assert_allclose(r.sq_dist, d.min(1), rtol=1e-5, atol=1e-6)
    sums = np.zeros((len(c), x.shape[1]))
    np.add.at(sums, labels, x.astype(np.float64))
    np.testing.assert_allclose(r.sums, sums, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(r.counts, np.bincount(labels, minlength=len(c)))
    assert r.inertia == pytest.approx(d.min(1).sum(), rel=1e-6)
    far = np.argsort(-d.min(1), kind="stable")[: len(r.far_rows)]
    np.testing.assert_array_equal(np.sort(r.far_rows), np.sort(far))


def test_two_replicas_give_the_same_sums():
    """MirroredStrategy over 2 logical CPU devices vs 1 device, in a fresh process:
    the fused op (no padding, halves of any length) and the XLA step (padded)."""
    proc = run_check("two_replicas")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def _partials(seed):
    x, c = _data(700, 3, 4, seed=seed)
    return Partials.from_batch(x, get_step()(x, c))


def test_partials_merge_is_order_free():
    parts = [_partials(s) for s in range(5)]
    fn = PartialsCombineFn(n_far=16)
    a = fn.merge_accumulators(
        [
            fn.add_input(fn.add_input(fn.create_accumulator(), parts[0]), parts[1]),
            fn.create_accumulator(),
            merge(parts[2:], 16),
        ]
    )
    b = merge(parts[::-1], 16)
    np.testing.assert_allclose(a.sums, b.sums, rtol=1e-12)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.far_rows, b.far_rows)
    np.testing.assert_array_equal(a.far_labels, b.far_labels)
    assert a.counts.sum() == 5 * 700


def test_bottom_sample_does_not_depend_on_chunking():
    x = np.random.default_rng(3).normal(size=(2000, 4))
    x[1000:1010] = x[0]  # duplicate rows share a hash; still deterministic
    fn = BottomSampleFn(300, 4)

    def sample(chunks):
        accs = [fn.add_input(fn.create_accumulator(), (row_hashes(c, 9), c)) for c in chunks]
        return fn.extract_output(fn.merge_accumulators(accs))

    a = sample([x])
    b = sample(np.array_split(x[::-1], 7))
    # one accumulator fed many batches (they wait until they hold m rows)
    acc = fn.create_accumulator()
    for c in np.array_split(x, 23):
        acc = fn.add_input(acc, (row_hashes(c, 9), c))
    c = fn.extract_output(fn.merge_accumulators([acc, fn.create_accumulator()]))
    order = np.lexsort(tuple(x.T[::-1]) + (row_hashes(x, 9),))[:300]  # NumPy: sort all
    for got in (a, b, c):
        np.testing.assert_array_equal(got.hashes, row_hashes(x, 9)[order])
        np.testing.assert_array_equal(got.rows, x[order])
    assert len(a.rows) == 300 and np.all(np.diff(a.hashes.astype(np.float64)) >= 0)
    assert not np.array_equal(row_hashes(x, 9), row_hashes(x, 10))


def test_update_stops_at_tolerance():
    c = np.array([[0.0, 0.0], [1.0, 1.0]])
    p = Partials(
        sums=np.array([[0.01, 0.0], [2.0, 2.0]]),
        counts=np.array([1, 2]),
        inertia=3.0,
        far_dist=np.zeros(0),
        far_rows=np.zeros((0, 2), np.float32),
        far_labels=np.zeros(0, np.int64),
    )
    s = lloyd_update(RoundState(c), p, tol=1e-4)
    assert s.converged and s.rounds == 1 and s.inertia_history == (3.0,)
    assert not lloyd_update(RoundState(c), p, tol=1e-5).converged
    assert lloyd_update(s, p, tol=0) is s  # converged state passes through


def test_refined_start_is_better_on_the_sample():
    from sklearn.datasets import make_blobs

    from transforms.core.seeding import initial_centroids

    x, _ = make_blobs(3000, 4, centers=6, cluster_std=2.0, random_state=1)

    def inertia(c):
        return ((x[:, None, :] - c[None]) ** 2).sum(-1).min(1).sum()

    plain = initial_centroids(x, 6, "k-means++", seed=0)
    refined = initial_centroids(x, 6, "k-means++", seed=0, refine_rounds=50)
    assert inertia(refined) < 0.9 * inertia(plain)
    np.testing.assert_array_equal(
        initial_centroids(x, 6, "given", 0, given=plain, refine_rounds=50), plain
    )  # given centroids are used as they are


@pytest.mark.parametrize("n,d,k", [(3000, 4, 6), (25000, 32, 64)])
def test_kmeans_plusplus_start_is_scikit_learns_bit_for_bit(n, d, k):
    """The k-means++ start (drawn with one BLAS thread) is scikit-learn's kmeans_plusplus
    on the sample's first seeding_rows(K) rows, as drawn with the default threads."""
    from sklearn.cluster import kmeans_plusplus

    from transforms.core.seeding import initial_centroids, seeding_rows

    x = np.random.default_rng(n).normal(size=(n, d)) * np.geomspace(0.1, 10, d)
    for seed in (0, 1):
        expected, _ = kmeans_plusplus(x[: seeding_rows(k)], k, random_state=seed)
        np.testing.assert_array_equal(initial_centroids(x, k, "k-means++", seed), expected)


def test_rejected_row_with_list_values_is_written_as_json():
    """A tf.Example row with several bytes values (and a NaN list) is rejected, not a crash."""
    import json

    import pyarrow as pa

    from pipeline.io.readers import Chunk
    from pipeline.io.validation import check_chunk

    batch = pa.RecordBatch.from_pydict(
        {
            "x": pa.array([[1.0], [2.0, float("nan")], [3.0]], pa.list_(pa.float64())),
            "tag": pa.array([[b"a"], [b"b", b"\xff"], [b"c"]], pa.list_(pa.binary())),
        }
    )
    checked = check_chunk(
        Chunk("f.tfrecord", batch, np.arange(1, 4), []), ["x"], batch.schema, "__features__"
    )
    assert checked.valid.num_rows == 2 and checked.n_read == 3
    (line,) = checked.rejected
    row = json.loads(line)
    assert (row["row"], row["column"], row["reason"]) == (2, "x", "2 values where one is expected")
    assert row["values"] == {"x": [2.0, "nan"], "tag": ["b", "\ufffd"]}


def test_local_runs_use_the_fn_api_runner_with_the_options():
    """No Prism attempt; the options still reach multi-process SDK workers."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from pipeline.private_apis import fn_api_runner

    runner = fn_api_runner(PipelineOptions(["--direct_num_workers=2"]))
    assert isinstance(runner, fn_runner.FnApiRunner)
    encoded = runner._provision_info.provision_info.pipeline_options
    assert int(encoded["beam:option:direct_num_workers:v1"]) == 2


def test_cached_views_hold_what_beams_views_hold():
    """ViewCachingOptions (the CLI's options): each class's view is built once, and reads,
    writes and pickles as PipelineOptions' views do, the impersonated account blanked."""
    import pickle

    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        PipelineOptions,
        StandardOptions,
    )

    from pipeline.options import KMeansOptions, ViewCachingOptions

    argv = [
        "--k",
        "4",
        "--max_rounds",
        "7",
        "--runner",
        "DirectRunner",
        "--impersonate_service_account",
        "someone@example.com",
    ]
    cached, fresh = ViewCachingOptions(argv), PipelineOptions(argv)
    assert cached.view_as(KMeansOptions) is cached.view_as(KMeansOptions)
    for options in (cached, fresh):
        options.view_as(KMeansOptions).tol = 0.5  # written through one view, read through others
        assert options.view_as(StandardOptions).runner == "DirectRunner"
        assert (
            options.view_as(KMeansOptions).tol,
            options.view_as(KMeansOptions).max_rounds,
            options.view_as(GoogleCloudOptions).impersonate_service_account,
        ) == (0.5, 7, "someone@example.com")
    assert cached.get_all_options() == fresh.get_all_options()
    loaded = pickle.loads(pickle.dumps(cached))
    assert loaded.view_as(GoogleCloudOptions).impersonate_service_account is None
    assert (loaded.view_as(KMeansOptions).tol, loaded.view_as(KMeansOptions).max_rounds) == (0.5, 7)
    loaded.view_as(KMeansOptions).tol = 0.25  # the loaded views share the loaded values
    assert loaded.get_all_options()["tol"] == 0.25
    assert cached.view_as(GoogleCloudOptions).impersonate_service_account == "someone@example.com"


def test_summary_says_what_the_last_round_gained():
    from pipeline.cli import _not_converged

    assert _not_converged({"inertia_history": [200.0, 100.0, 99.0]}) == (
        "not converged: the last round lowered the inertia 1%; see --max_rounds"
    )
    assert _not_converged({"inertia_history": [5.0]}) == "not converged"


def test_the_command_skips_only_the_teardown_of_a_normal_exit():
    """`shardmeans` and `python -m pipeline` end with os._exit (unloading TensorFlow
    takes seconds): threads are still waited for, exit handlers run, buffered
    output is flushed, and main()'s status is the process's."""
    proc = run_check("command_exit", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == "buffered thread done\nhandler ran\n"
    assert proc.stderr.startswith("usage: shardmeans")
