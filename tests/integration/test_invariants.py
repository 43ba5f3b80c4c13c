"""Results do not depend on sharding, batching, workers, replicas, format or cache."""

import numpy as np
import pyarrow as pa
import pytest

from helpers import centroids, fit, fit_subprocess, metrics, scaled_blobs, write_shards

K = 4
# No refinement of the start on the init sample (here all 4000 rows): the full passes,
# over shards, batches, workers and replicas, do the Lloyd work (3 rounds to converge).
FIT = ("--k", K, "--id_column", "id", "--seed", 5, "--init_refine_rounds", 0, "--max_rounds", 10)


@pytest.fixture(scope="module")
def float32_exact_table():
    """Values exactly representable in float32, so CSV, Parquet and TFRecord (float_list)
    carry the same numbers and the init sample (a hash of the values) is the same."""
    table = scaled_blobs(4000, 4, K, seed=11, cluster_std=2.0)
    return pa.table(
        {
            n: (c if n == "id" else pa.array(c.to_numpy().astype(np.float32).astype(np.float64)))
            for n, c in zip(table.schema.names, table.columns)
        }
    )


@pytest.fixture(scope="module")
def reference(float32_exact_table, tmp_path_factory):
    """The reference run (FIT): Parquet in 3 shards, one worker, one replica, default batch size."""
    base = tmp_path_factory.mktemp("reference")
    pattern = write_shards(float32_exact_table, base / "in", "parquet", shards=3)
    assert fit(base / "out", "--input", pattern, *FIT) == 0
    m = metrics(base / "out")
    assert m["converged"] and m["rounds"] > 1, "the rounds should do Lloyd work, and finish"
    return pattern, centroids(base / "out"), m


def _same(out, reference):
    np.testing.assert_allclose(centroids(out), reference[1], rtol=1e-5, atol=1e-6)
    assert metrics(out)["inertia"] == pytest.approx(reference[2]["inertia"], rel=1e-6)


@pytest.mark.parametrize(
    "fmt, shards, extra",
    [
        ("parquet", 7, ["--batch_size", 500]),
        ("csv", 2, ["--batch_size", 65536, "--cache_mb", 0]),
        ("tfrecord", 2, []),
    ],
    ids=["7-shards-batch500", "csv-no-cache", "tfrecord"],
)
def test_same_centroids(float32_exact_table, reference, tmp_path, fmt, shards, extra):
    """Each run differs from the reference in several ways at once (the rows' order, the
    sharding, the format, the batch size, the cache) and gives its centroids. Worker
    processes: the weighted and the imputed tests below run 2, weighted and unweighted."""
    table = float32_exact_table.take(np.random.default_rng(shards).permutation(4000))
    pattern = write_shards(table, tmp_path / "in", fmt, shards=shards)
    assert fit(tmp_path / "out", "--input", pattern, *FIT, *extra) == 0
    _same(tmp_path / "out", reference)


def test_same_centroids_with_two_replicas(reference, tmp_path):
    """The CPU split into 2 logical devices: a MirroredStrategy with 2 replicas (own process,
    since TensorFlow's devices are fixed once it starts)."""
    proc = fit_subprocess(tmp_path / "out", "--input", reference[0], *FIT, "--devices", "cpu:2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 replica(s)" in proc.stderr
    _same(tmp_path / "out", reference)


@pytest.fixture(scope="module")
def weighted_reference(float32_exact_table, tmp_path_factory):
    """The reference weighted run: FIT with --weight_column w (weights 0 to 3 in quarters,
    exact in every format), Parquet in 3 shards, one worker, the default batch size."""
    base = tmp_path_factory.mktemp("weighted")
    w = np.random.default_rng(2).integers(0, 13, float32_exact_table.num_rows) / 4
    table = float32_exact_table.append_column("w", pa.array(w))
    pattern = write_shards(table, base / "in", "parquet", shards=3)
    assert fit(base / "out", "--input", pattern, *FIT, "--weight_column", "w") == 0
    m = metrics(base / "out")
    assert m["converged"] and m["rounds"] > 1, "the rounds should do Lloyd work, and finish"
    return table, centroids(base / "out"), m


@pytest.mark.parametrize(
    "shards,extra",
    [
        (7, ["--batch_size", 500, "--cache_mb", 0]),
        (2, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]),
    ],
    ids=["7-shards-batch500-no-cache", "2-workers"],
)
def test_same_weighted_centroids(weighted_reference, tmp_path, shards, extra):
    """Weighted: the same result for any sharding and order of the rows, batch size, cache
    and number of workers (the init sample is a priority sample of the rows alone)."""
    table = weighted_reference[0]
    table = table.take(np.random.default_rng(shards).permutation(table.num_rows))
    pattern = write_shards(table, tmp_path / "in", "parquet", shards=shards)
    out = tmp_path / "out"
    assert fit(out, "--input", pattern, *FIT, "--weight_column", "w", *extra) == 0
    _same(out, weighted_reference)
    assert metrics(out)["cluster_weights"] == weighted_reference[2]["cluster_weights"]


def test_imputed_and_vector_features_do_not_depend_on_sharding_batches_or_workers(tmp_path):
    """--missing impute, an embedding column and a categorical one (#21's options): the same
    centroids from 3 shards, one worker, the default batch as from 5 shards, batches of
    300, 2 workers."""
    rng = np.random.default_rng(4)
    n, width = 3000, 6
    centers = rng.normal(0, 4, (K, width + 1)).astype(np.float32)
    x = (centers[rng.integers(0, K, n)] + rng.normal(0, 1, (n, width + 1))).astype(np.float32)
    scalar = pa.array(x[:, 0].astype(np.float64), mask=rng.random(n) < 0.05)  # 5% null
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    vector = pa.ListArray.from_arrays(offsets, pa.array(x[:, 1:].reshape(-1)))
    shop = [
        None if u < 0.05 else str(v) for u, v in zip(rng.random(n), rng.choice(list("abcd"), n))
    ]
    table = pa.table({"id": np.arange(n), "s": scalar, "v": vector, "shop": pa.array(shop)})
    args = ["--features", "s,v,shop", "--missing", "impute", "--max_categories", 3, *FIT]
    runs = []
    for shards, extra in (
        (3, []),
        (
            5,
            [
                "--batch_size",
                300,
                "--direct_running_mode=multi_processing",
                "--direct_num_workers=2",
            ],
        ),
    ):
        pattern = write_shards(table, tmp_path / f"in{shards}", "parquet", shards=shards)
        assert fit(tmp_path / f"out{shards}", "--input", pattern, *args, *extra) == 0
        runs.append(tmp_path / f"out{shards}")
    m = metrics(runs[0])
    assert m["features"] == ["s"] + [f"v[{i}]" for i in range(width)] + ["shop"]
    assert m["values_imputed"]["s"] == int(scalar.null_count) and m["rows_valid"] == n
    assert m["values_imputed"]["shop"] == shop.count(None) > 0
    _same(runs[1], (None, centroids(runs[0]), m))
