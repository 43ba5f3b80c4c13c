"""`shardmeans generate`: labelled Gaussian blobs whose features have very different scales.

The demo's data and the benchmarks'. Shards are generated one at a time from
their own seed, so memory stays at one shard whatever --rows is.
"""

import argparse
import os
from typing import List

import numpy as np
import pyarrow as pa


def arg_parser() -> argparse.ArgumentParser:
    """The flags of `shardmeans generate`. A bad flag raises pipeline.flags.FlagError,
    one line, as in `fit` and `score` (no usage block, no abbreviations)."""
    from pipeline.flags import OneLineArgumentParser

    parser = OneLineArgumentParser(
        prog="shardmeans generate",
        description="Write sample data to try `shardmeans fit` on: rows drawn from\n"
        "Gaussian blobs, in shards, whose feature columns differ in scale by up to\n"
        "five orders of magnitude (what the fit's standardization is for).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="directory the shards are written to, created if missing (required); "
        "files already there with the same names are replaced",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=200_000,
        metavar="N",
        help="rows in all, split evenly over the shards; default 200000",
    )
    parser.add_argument(
        "--features",
        type=int,
        default=8,
        metavar="D",
        help="number of feature columns, f0 .. f{D-1} (--dtype), each with its own "
        "scale and offset; default 8",
    )
    parser.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default="float64",
        help="the feature columns' type (Parquet; CSV text and tf.Example float_list "
        "carry the float32 values as such); default float64",
    )
    parser.add_argument(
        "--clusters",
        type=int,
        default=6,
        metavar="K",
        help="number of Gaussian blobs the rows are drawn from, the K a fit should "
        "find; the column 'blob' holds each row's (blob-0, blob-1, ...); default 6",
    )
    parser.add_argument(
        "--format",
        choices=["parquet", "csv", "tfrecord"],
        default="parquet",
        help="file format: parquet, csv (with a header row) or tfrecord (one "
        "tf.Example per row); default parquet",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=4,
        metavar="N",
        help="number of files, written one at a time, so memory holds one shard "
        "whatever --rows is; default 4",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the blobs' centres, scales and offsets and of every shard's "
        "rows: the same flags write the same files; default 0",
    )
    # Taken out by the command before the others are parsed; here for --help.
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log everything, and the full text and traceback of an error "
        "the command otherwise reports in one line",
    )
    return parser


_EPILOG = """\
Each row has the columns id (int64, unique, 0 .. N-1), f0 .. f{D-1} and blob (string).
The files are DIR/blobs-00000-of-00004.parquet, ... (with --shards 4, --format parquet).
Fit them with, e.g.:

  shardmeans generate --output data --rows 200000 --features 8 --clusters 6
  shardmeans fit --input 'data/*.parquet' --output out --k 6 --id_column id

(--id_column id: the id is not a feature; blob is text, never a feature.)"""


def blobs(
    rows: int,
    features: int,
    clusters: int,
    seed: int,
    shard: int = 0,
    first_id: int = 0,
    dtype: str = "float64",
) -> pa.Table:
    """A table: id (int64), f0..f{D-1} (`dtype`), blob (string, the true cluster)."""
    layout = np.random.default_rng(seed)
    centers = layout.uniform(-10, 10, size=(clusters, features))
    scales = 10.0 ** layout.uniform(-2, 3, size=features)
    offsets = layout.uniform(-100, 100, size=features) * scales
    rng = np.random.default_rng([seed, shard + 1])
    labels = rng.integers(0, clusters, size=rows)
    x = (centers[labels] + rng.normal(size=(rows, features))) * scales + offsets
    columns = {"id": pa.array(np.arange(first_id, first_id + rows, dtype=np.int64))}
    x = x.astype(dtype)
    columns.update({f"f{j}": pa.array(x[:, j]) for j in range(features)})
    columns["blob"] = pa.array([f"blob-{c}" for c in labels])
    return pa.table(columns)


def write_table(table: pa.Table, path: str, fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        import tensorflow as tf

        with tf.io.TFRecordWriter(path) as writer:
            for row in table.to_pylist():
                writer.write(_example(row).SerializeToString())


def _example(row: dict):
    import tensorflow as tf

    feature = {}
    for name, value in row.items():
        if isinstance(value, str):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        elif isinstance(value, int):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def generate(
    output: str,
    rows: int,
    features: int,
    clusters: int,
    fmt: str = "parquet",
    shards: int = 4,
    seed: int = 0,
    dtype: str = "float64",
) -> List[str]:
    """Write `rows` rows in `shards` files under `output`; return their paths."""
    os.makedirs(output, exist_ok=True)
    suffix = {"parquet": "parquet", "csv": "csv", "tfrecord": "tfrecord"}[fmt]
    paths, first = [], 0
    for shard in range(shards):
        n = rows // shards + (1 if shard < rows % shards else 0)
        path = os.path.join(output, f"blobs-{shard:05d}-of-{shards:05d}.{suffix}")
        write_table(blobs(n, features, clusters, seed, shard, first, dtype), path, fmt)
        paths.append(path)
        first += n
    return paths
