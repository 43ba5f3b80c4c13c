"""Standardized shards: Parquet files of float32 feature rows, and a bounded per-process cache.

A shard holds the column `FEATURES_COLUMN` (list<float32>, D values a row) and
any passthrough columns (the id, or all input columns). The rounds read only
the features column, through `ShardCache`: a hit returns the matrix kept in
memory, a miss just reads the file again, so results never depend on the cache.
"""
import collections
import functools
import os
import threading
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

FEATURES_COLUMN = "__features__"


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


def iter_shard(path: str, batch_size: int, columns=None) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `batch_size` rows of one shard, streamed."""
    with FileSystems.open(path) as f:
        yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)


def default_cache_mb() -> int:
    """A quarter of the machine's memory: several SDK processes may share a VM."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return int(total // 4 >> 20)


class ShardCache:
    """LRU cache of shard feature matrices, bounded in bytes; thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def batches(self, path: str, n_features: int, batch_size: int) -> Iterator[np.ndarray]:
        """float32 [<= batch_size, D] batches of the shard at `path`, in file order."""
        with self._lock:
            x = self._items.get(path)
            if x is not None:
                self._items.move_to_end(path)
        if x is not None:
            for start in range(0, len(x), batch_size):
                yield x[start:start + batch_size]
            return
        kept, size = [], 0
        for batch in iter_shard(path, batch_size, columns=[FEATURES_COLUMN]):
            x = features_to_matrix(batch.column(0), n_features)
            size += x.nbytes
            if size <= self.max_bytes:
                kept.append(x)
            yield x
        if size <= self.max_bytes:
            self._put(path, np.concatenate(kept) if kept else np.zeros((0, n_features), np.float32))

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
