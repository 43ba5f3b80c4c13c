"""Shared helpers: small data on disk, running the CLI in-process, reading its outputs."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.generate import write_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scaled_blobs(
    rows: int, features: int, clusters: int, seed: int = 0, cluster_std: float = 1.0
) -> pa.Table:
    """id + f0..f{D-1}: overlapping blobs whose columns differ in scale by up to 1e5."""
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(rows, features, centers=clusters, cluster_std=cluster_std, random_state=seed)
    rng = np.random.default_rng(seed)
    x = x * 10.0 ** rng.uniform(-2, 3, features) + rng.uniform(-1e3, 1e3, features)
    columns = {"id": pa.array(np.arange(rows, dtype=np.int64))}
    columns.update({f"f{j}": pa.array(x[:, j]) for j in range(features)})
    return pa.table(columns)


def write_shards(table: pa.Table, directory, fmt: str = "parquet", shards: int = 3) -> str:
    """Write `table` as `shards` files under `directory`; return the glob."""
    os.makedirs(directory, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    for i in range(shards):
        write_table(
            table.slice(bounds[i], bounds[i + 1] - bounds[i]),
            os.path.join(directory, f"part-{i}.{fmt}"),
            fmt,
        )
    return os.path.join(str(directory), f"*.{fmt}")


def features_of(table: pa.Table) -> np.ndarray:
    return np.column_stack(
        [table.column(n).to_numpy() for n in table.schema.names if n.startswith("f")]
    ).astype(np.float64)


def fit(output, *args) -> int:
    """Run `shardmeans fit` in this process; return its exit status."""
    return main(["fit", "--output", str(output), *map(str, args)])


def fit_subprocess(output, *args, timeout=600) -> subprocess.CompletedProcess:
    """Run `python -m pipeline fit` in a new process (for process-wide TF settings)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "fit", "--output", str(output), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metrics(output) -> dict:
    with open(os.path.join(output, "metrics.json")) as f:
        return json.load(f)


def centroids(output) -> np.ndarray:
    return np.load(os.path.join(output, "centroids.npy"), allow_pickle=False)


def assignments(output) -> pa.Table:
    """All assignment rows, sorted by id when there is one."""
    files = sorted(glob.glob(os.path.join(output, "assignments", "*")))
    tables = [pq.read_table(f) if f.endswith(".parquet") else pacsv.read_csv(f) for f in files]
    table = pa.concat_tables([t for t in tables if t.num_rows]) if tables else None
    if table is not None and "id" in table.schema.names:
        table = table.sort_by("id")
    return table


def rejected(output) -> list:
    rows = []
    for f in sorted(glob.glob(os.path.join(output, "rejected", "*.jsonl"))):
        with open(f) as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


@pytest.fixture(scope="session")
def blob_table():
    """3000 rows x 5 features, 4 overlapping blobs (Lloyd needs several rounds)."""
    return scaled_blobs(3000, 5, 4, seed=3, cluster_std=2.5)


@pytest.fixture(scope="session")
def blob_parquet(blob_table, tmp_path_factory):
    return write_shards(blob_table, tmp_path_factory.mktemp("blobs"), "parquet")
