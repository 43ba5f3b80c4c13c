"""Shared test helpers: small data on disk, running the CLI in this process or another,
reading its outputs, running a check of tests/subprocess_checks/ in a fresh interpreter.

Importable from every test as `from helpers import ...` (pyproject.toml's pytest
`pythonpath` puts tests/ on the path); fixtures live in the conftest.py files.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.cli import main
from pipeline.generate import write_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


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


def ab_csv(rows: int = 8) -> str:
    """CSV text of two well-separated groups of `rows` rows: id, a, b."""
    lines = ["id,a,b"] + [f"{i},{(i % 2) * 10 + i * 0.01},{(i % 2) * 10}" for i in range(rows)]
    return "\n".join(lines) + "\n"


def tf_example(**features) -> bytes:
    """A serialized tf.Example: each value a list of bytes, ints or floats (by its first item)."""
    import tensorflow as tf

    feature = {}
    for name, values in features.items():
        if not values:
            feature[name] = tf.train.Feature()
        elif isinstance(values[0], bytes):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif isinstance(values[0], int):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(path, records) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def many_units_case():
    """(x, groups) for the fused op: more rows than the op's work units (4,096 rows each)
    hold, so its threads share them out. Rows scaled over 12 orders of magnitude: their
    float64 sums round, so summed in another grouping they differ in the last bits."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(70000, 16)) * 10.0 ** rng.uniform(-6, 6, size=(70000, 1))
    x = x.astype(np.float32)
    return x, [rng.normal(size=(64, 16)).astype(np.float32) for _ in range(3)]


# The flags of a fit that only has to run, not to converge: one start, no refining, 2 rounds.
FAST = ("--k", 2, "--n_init", 1, "--init_refine_rounds", 0, "--max_rounds", 2)


def fit(output, *args) -> int:
    """Run `shardmeans fit` in this process; return its exit status."""
    return main(["fit", "--output", str(output), *map(str, args)])


def score(model, output, *args) -> int:
    """Run `shardmeans score --model MODEL --output OUTPUT ...` in this process; its status."""
    return main(["score", "--model", str(model), "--output", str(output), *map(str, args)])


def fit_subprocess(output, *args, timeout=600, unprivileged=False) -> subprocess.CompletedProcess:
    """Run `python -m pipeline fit` in a new process (for process-wide TF settings).

    `unprivileged`: as a user whom file permissions apply to; root (these tests'
    user in CI) runs it without the capabilities that override them (setpriv).
    """
    command = [sys.executable, "-m", "pipeline", "fit", "--output", str(output), *map(str, args)]
    if unprivileged and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    # A new command's environment: not the TF_CPP_MIN_LOG_LEVEL that an in-process
    # run of the command (`fit`) set in this one for its workers.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_check(name: str, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run tests/subprocess_checks/`name`.py in a fresh interpreter, as
    `python -m subprocess_checks.<name> ARGS` from ROOT with tests/ on its path
    (`env`, default this process's environment, plus that PYTHONPATH)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", f"subprocess_checks.{name}", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def keras_view_equals_the_model(model_dir, rows: np.ndarray) -> None:
    """The model's Keras 3 view (what Beam's stock TFModelHandlerTensor loads where
    tf.keras is Keras 3) gives the SavedModel's own outputs for float64 rows [n, D]: its
    arithmetic is a second implementation. Loaded with `keras` itself, which is Keras 3
    in this process too (tf.Transform routes only tf.keras to tf-keras); the stock
    handler in a fresh process is tests/subprocess_checks/stock_tf_handler.py."""
    import keras
    import tensorflow as tf

    x = tf.constant(rows.astype(np.float32))
    expected = tf.saved_model.load(str(model_dir))(x)
    view = keras.models.load_model(str(model_dir))(x)
    assert set(view) == set(expected), (sorted(view), sorted(expected))
    for name, value in view.items():
        value, want = np.asarray(value), expected[name].numpy()
        assert value.dtype == want.dtype, (name, value.dtype)
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=name)


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


def leftovers(output) -> list:
    """Anything a run leaves beside OUTPUT: its lock, run directories, a replaced tree."""
    return sorted(glob.glob(str(output) + ".*"))
