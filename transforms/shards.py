"""Shards: Parquet files of feature rows, standardized when read, and a bounded per-process cache.

A shard holds the column `FEATURES_COLUMN` (list<float64>, D values a row, as
validated) and any passthrough columns (the id, or all input columns); its
schema metadata names the tf.Transform output that standardizes it (`KMeans`
writes the shards in the read stage, before the analysis has finished).

Readers always get standardized float32 rows: a shard goes through the saved
transform_fn once per read, so the values are bit for bit what tf.Transform's
transform gives. The rounds read only the features column,
through `ShardCache`: a hit returns the matrix kept in memory, a miss just
reads the file again, so results never depend on the cache.
"""
import collections
import functools
import os
import threading
from typing import Callable, Iterator, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

FEATURES_COLUMN = "__features__"
# Schema metadata of a raw shard: where its transform_fn is, and the run that
# wrote it (a process may fit twice into the same output directory).
TRANSFORM_DIR_KEY, RUN_KEY = b"shardmeans.transform_dir", b"shardmeans.run"


def features_to_matrix(column: pa.Array, n_features: int, dtype=np.float32) -> np.ndarray:
    """A list<float> column of n rows -> `dtype` [n, D] (a view when the types agree)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype(dtype, copy=False).reshape(-1, n_features)


def matrix_to_features(x: np.ndarray) -> pa.Array:
    """float [n, D] -> a list<float> Arrow column of n rows (no copy of the values)."""
    n, d = x.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))


def raw_shard_schema(passthrough: pa.Schema, transform_dir: str, run: str) -> pa.Schema:
    """Columns of a raw shard: float64 features + passthrough; the metadata names its transform."""
    return pa.schema([pa.field(FEATURES_COLUMN, pa.list_(pa.float64()))] + list(passthrough),
                     metadata={TRANSFORM_DIR_KEY: transform_dir.encode(), RUN_KEY: run.encode()})


def parquet_batches(parquet: pq.ParquetFile, batch_size: int, columns=None
                    ) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `batch_size` rows of a Parquet file, one row group at a time.

    Not one `iter_batches` over the whole file: with pyarrow 25 that holds on
    to memory (outside Arrow's pool) in proportion to the rows read until it
    ends, about the file's decoded size; one row group at a time holds one.
    """
    for group in range(parquet.num_row_groups):
        yield from parquet.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns)


def iter_standardized(path: str, n_features: int, batch_size: int, columns=None
                      ) -> Iterator[Tuple[pa.RecordBatch, np.ndarray]]:
    """(record batch, its standardized float32 [<= batch_size, D] rows) of one shard, streamed.

    `columns`: the columns to read (default all; the features are always read).
    """
    with FileSystems.open(path) as f:
        shard = pq.ParquetFile(f)
        standardize = _standardizer_of(shard.schema_arrow.metadata, n_features, path)
        if columns is not None and FEATURES_COLUMN not in columns:
            columns = [FEATURES_COLUMN] + list(columns)
        for batch in parquet_batches(shard, batch_size, columns):
            x = features_to_matrix(batch.column(FEATURES_COLUMN), n_features, np.float64)
            yield batch, standardize(x)


def iter_passthrough(path: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Record batches (<= batch_size rows, file order) of a shard's columns but the features."""
    with FileSystems.open(path) as f:
        shard = pq.ParquetFile(f)
        columns = [name for name in shard.schema_arrow.names if name != FEATURES_COLUMN]
        yield from parquet_batches(shard, batch_size, columns)


def shard_rows(path: str) -> int:
    """Rows in a shard, from its footer (reads no data)."""
    with FileSystems.open(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def _standardizer_of(metadata: Optional[dict], n_features: int, path: str) -> Callable:
    """The transform of a shard: float64 [n, D] -> float32 [n, D]."""
    if not metadata or TRANSFORM_DIR_KEY not in metadata:
        raise ValueError(f"{path} is not a shardmeans shard: its Parquet schema does not name "
                         f"the transform_fn that standardizes it")
    return _standardizer(metadata[TRANSFORM_DIR_KEY].decode(), n_features,
                         metadata.get(RUN_KEY, b"").decode())


@functools.lru_cache(maxsize=4)
def _standardizer(transform_dir: str, n_features: int, run: str):
    """One loaded transform_fn per process and run (loading it is a SavedModel load)."""
    del run  # part of the key only
    from transforms.preprocessing import Standardizer

    return Standardizer(transform_dir, n_features)


def default_cache_mb() -> int:
    """A quarter of the machine's memory: several SDK processes may share a VM."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return int(total // 4 >> 20)


class ShardCache:
    """LRU cache of standardized shard feature matrices, bounded in bytes; thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: str) -> Optional[np.ndarray]:
        """The cached standardized float32 [n, D] rows of the shard at `path`, or None."""
        with self._lock:
            x = self._items.get(path)
            if x is not None:
                self._items.move_to_end(path)
            return x

    def batches(self, path: str, n_features: int, batch_size: int) -> Iterator[np.ndarray]:
        """Standardized float32 [<= batch_size, D] batches of the shard at `path`, in file order."""
        x = self.get(path)
        if x is not None:
            for start in range(0, len(x), batch_size):
                yield x[start:start + batch_size]
            return
        # Filled in place as the batches stream by: one copy of the shard at
        # most, not a list of batches and then their concatenation.
        n = shard_rows(path)
        kept = (np.empty((n, n_features), np.float32)
                if n * n_features * 4 <= self.max_bytes else None)
        start = 0
        for _, x in iter_standardized(path, n_features, batch_size, columns=[FEATURES_COLUMN]):
            if kept is not None:
                kept[start:start + len(x)] = x
            start += len(x)
            yield x
        if kept is not None:
            self._put(path, kept)

    def _put(self, path: str, x: np.ndarray) -> None:
        with self._lock:
            if path in self._items:
                return
            while self._items and self._bytes + x.nbytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
            self._items[path] = x
            self._bytes += x.nbytes


@functools.lru_cache(maxsize=None)
def get_shard_cache(max_mb: int) -> ShardCache:
    """The process-wide shard cache (one per size, built on first use)."""
    return ShardCache(max_mb << 20)
