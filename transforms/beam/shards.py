"""Shards: Arrow IPC files of feature rows, standardized when read, and a bounded per-process cache.

A shard holds the column `FEATURES_COLUMN` (list<float64>, D_num values a row, as
validated), with categorical features `CATEGORIES_COLUMN` (list<string>, C values a
row: transforms.core.categorical), in a weighted fit `WEIGHT_COLUMN` (float64, each row's weight, which
travels with its row to every pass) and any passthrough columns (the id, or all input columns); its
schema metadata names the tf.Transform output that standardizes it (`KMeans`
writes the shards in the read stage, before the analysis has finished).

Why Arrow IPC rather than Parquet: the shards are scratch data, read back
whole by the same job, and IPC's uncompressed layout is the in-memory one:
writing and reading it take a fraction of Parquet's encoding and decoding
(bench/RESULTS.md, 'Fixed costs'). The file ends with an empty record batch
whose metadata counts the rows (`_row_count`).

Readers always get standardized float32 rows: a shard goes through the saved
transform_fn once per read, so the values are bit for bit what tf.Transform's
transform gives. The rounds read only the features column,
through `ShardCache`: a hit returns the matrix kept in memory, a miss just
reads the file again, so results never depend on the cache.
"""

import collections
import contextlib
import functools
import os
import posixpath
import threading
from typing import Callable, Iterator, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.step.buffers import aligned_empty

FEATURES_COLUMN = "__features__"
# The raw values of the categorical features (list<string>, C a row), beside the numbers.
CATEGORIES_COLUMN = "__categories__"
# A weighted fit's row weights (float64, finite, >= 0), beside the features.
WEIGHT_COLUMN = "__weight__"
# Schema metadata of a raw shard: where its transform_fn is, and the run that
# wrote it (a process may fit twice into the same output directory).
TRANSFORM_DIR_KEY, RUN_KEY = b"shardmeans.transform_dir", b"shardmeans.run"
# ... and the raw widths its transform takes: D_num numbers and C categorical values.
NUMERIC_KEY, CATEGORICAL_KEY = b"shardmeans.numeric", b"shardmeans.categorical"
# Metadata of a shard's last (empty) record batch: the rows it holds.
ROWS_KEY = b"shardmeans.rows"
SHARD_SUFFIX = ".arrow"


def features_to_matrix(column: pa.Array, n_features: int, dtype=np.float32) -> np.ndarray:
    """A list<float> column of n rows -> `dtype` [n, D] (a view when the types agree)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype(dtype, copy=False).reshape(len(column), n_features)


def categories_to_matrix(column: pa.Array, n_categorical: int) -> np.ndarray:
    """A list<string> column of n rows -> object [n, C] of str."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype(object, copy=False).reshape(len(column), n_categorical)


def matrix_to_categories(values: np.ndarray) -> pa.Array:
    """object [n, C] of str -> a list<string> Arrow column of n rows."""
    n, c = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa.string()))


def matrix_to_features(x: np.ndarray) -> pa.Array:
    """float [n, D] -> a list<float> Arrow column of n rows (no copy of the values)."""
    n, d = x.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))


def raw_shard_schema(
    passthrough: pa.Schema,
    transform_dir: str,
    run: str,
    weighted: bool = False,
    n_numeric: int = 0,
    n_categorical: int = 0,
) -> pa.Schema:
    """Columns of a raw shard: float64 features (+ string categories) (+ float64 weights)
    + passthrough; the metadata names its transform and the raw widths it takes."""
    categories = [pa.field(CATEGORIES_COLUMN, pa.list_(pa.string()))] if n_categorical else []
    weight = [pa.field(WEIGHT_COLUMN, pa.float64())] if weighted else []
    return pa.schema(
        [pa.field(FEATURES_COLUMN, pa.list_(pa.float64()))]
        + categories
        + weight
        + list(passthrough),
        metadata={
            TRANSFORM_DIR_KEY: transform_dir.encode(),
            RUN_KEY: run.encode(),
            NUMERIC_KEY: str(n_numeric).encode(),
            CATEGORICAL_KEY: str(n_categorical).encode(),
        },
    )


class _ShardSink(filebasedsink.FileBasedSink):
    """Beam's file sink, writing each element, a pa.Table of the shard schema, to Arrow IPC.

    A bundle's tables go to one file; the sink renames the files into place
    once, even when bundles are retried.
    """

    def __init__(self, file_path_prefix: str, schema: pa.Schema):
        super().__init__(
            file_path_prefix,
            coder=None,
            file_name_suffix=SHARD_SUFFIX,
            mime_type="application/vnd.apache.arrow.file",
            compression_type=CompressionTypes.UNCOMPRESSED,
        )
        self._schema = schema

    def open(self, temp_path):
        handle = super().open(temp_path)
        return _OpenShard(handle, pa.ipc.new_file(handle, self._schema))

    def write_record(self, shard, table: pa.Table):
        shard.writer.write_table(table)
        shard.rows += table.num_rows

    def close(self, shard):
        # The row count, for readers that size a buffer before reading (`_row_count`).
        shard.writer.write_batch(
            pa.RecordBatch.from_pylist([], schema=self._schema),
            custom_metadata={ROWS_KEY: str(shard.rows).encode()},
        )
        shard.writer.close()
        shard.handle.close()


class _OpenShard:
    """A shard being written: its file, its IPC writer, the rows written so far."""

    def __init__(self, handle, writer: pa.ipc.RecordBatchFileWriter):
        self.handle, self.writer, self.rows = handle, writer, 0


class WriteShards(beam.PTransform):
    """pa.Tables of `schema` -> the paths of the shard files written (PREFIX-SSSSS-of-NNNNN.arrow)."""

    def __init__(self, file_path_prefix: str, schema: pa.Schema):
        super().__init__()
        self._sink = _ShardSink(file_path_prefix, schema)

    def expand(self, tables):
        return tables | beam.io.iobase.Write(self._sink)


def _record_batches(
    reader: pa.ipc.RecordBatchFileReader, batch_size: int, columns=None
) -> Iterator[pa.RecordBatch]:
    """A shard's record batches in file order, cut to at most `batch_size` rows."""
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)  # reads this batch only
        if columns is not None:
            batch = batch.select(columns)
        for start in range(0, batch.num_rows, batch_size):
            yield batch.slice(start, batch_size)


@contextlib.contextmanager
def _open_shard(path: str) -> Iterator[pa.ipc.RecordBatchFileReader]:
    """The IPC reader of the shard at `path` (reads its footer; batches on demand)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        yield pa.ipc.open_file(f)


def _standardized(
    shard: pa.ipc.RecordBatchFileReader, path: str, n_features: int, batch_size: int, columns=None
) -> Iterator[Tuple[pa.RecordBatch, np.ndarray]]:
    """(batch, its rows standardized float32 [n, n_features]) of a shard."""
    standardize = _standardizer_of(shard.schema.metadata, n_features, path)
    raw = [FEATURES_COLUMN] + ([CATEGORIES_COLUMN] if standardize.n_categorical else [])
    if columns is not None:
        columns = raw + [c for c in columns if c not in raw]
    for batch in _record_batches(shard, batch_size, columns):
        x = features_to_matrix(batch.column(FEATURES_COLUMN), standardize.n_features, np.float64)
        categories = None
        if standardize.n_categorical:
            categories = categories_to_matrix(
                batch.column(CATEGORIES_COLUMN), standardize.n_categorical
            )
        yield batch, standardize(x, categories)


def _row_count(shard: pa.ipc.RecordBatchFileReader, path: str) -> int:
    """Rows in a shard, from the metadata of its last, empty record batch (reads no rows)."""
    metadata = (
        shard.get_batch_with_custom_metadata(shard.num_record_batches - 1)[1]
        if shard.num_record_batches
        else None
    )
    if not metadata or ROWS_KEY not in metadata:
        raise ValueError(f"{path} is not a shardmeans shard: it does not end with its row count")
    return int(metadata[ROWS_KEY])


def iter_standardized(
    path: str, n_features: int, batch_size: int, columns=None
) -> Iterator[Tuple[pa.RecordBatch, np.ndarray]]:
    """(record batch, its standardized float32 [<= batch_size, D] rows) of one shard, streamed.

    `columns`: the columns to return (default all; the features are always read).
    """
    with _open_shard(path) as shard:
        yield from _standardized(shard, path, n_features, batch_size, columns)


def iter_passthrough(path: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Record batches (<= batch_size rows, file order) of a shard's columns but the features
    (the weights included, in a weighted fit)."""
    with _open_shard(path) as shard:
        raw = (FEATURES_COLUMN, CATEGORIES_COLUMN)
        columns = [name for name in shard.schema.names if name not in raw]
        yield from _record_batches(shard, batch_size, columns)


def _standardizer_of(metadata: Optional[dict], n_features: int, path: str) -> Callable:
    """The transform of a shard: float64 [n, D_num] (+ categories [n, C]) -> float32 [n, D].
    A shard without the raw widths in its metadata has D_num = D numbers alone."""
    if not metadata or TRANSFORM_DIR_KEY not in metadata:
        raise ValueError(
            f"{path} is not a shardmeans shard: its schema does not name "
            f"the transform_fn that standardizes it"
        )
    return _standardizer(
        _transform_dir(metadata[TRANSFORM_DIR_KEY].decode(), path),
        int(metadata.get(NUMERIC_KEY, str(n_features).encode())),
        int(metadata.get(CATEGORICAL_KEY, b"0")),
        metadata.get(RUN_KEY, b"").decode(),
    )


def _transform_dir(recorded: str, shard_path: str) -> str:
    """The transform_fn a shard names, or, once that path is gone, the one beside the work
    directory that holds the shard (OUTPUT/_work/shards/x.arrow -> OUTPUT/transform_fn):
    a fit writes under a run directory that is then moved to OUTPUT, or a user moves it."""
    if FileSystems.exists(recorded):
        return recorded
    work_dir = posixpath.dirname(posixpath.dirname(shard_path))
    beside = FileSystems.join(posixpath.dirname(work_dir), posixpath.basename(recorded))
    return beside if FileSystems.exists(beside) else recorded


@functools.lru_cache(maxsize=4)
def _standardizer(transform_dir: str, n_numeric: int, n_categorical: int, run: str):
    """One loaded transform_fn per process and run (loading it is a SavedModel load)."""
    del run  # part of the key only
    from transforms.step.preprocessing import Standardizer

    return Standardizer(transform_dir, n_numeric, n_categorical)


def default_cache_mb() -> int:
    """A quarter of the machine's memory: several SDK processes may share a VM."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return int(total // 4 >> 20)


def row_weights(batch: pa.RecordBatch) -> np.ndarray:
    """float32 [n]: a weighted shard's record batch's weights, as the step takes them."""
    return batch.column(WEIGHT_COLUMN).to_numpy(zero_copy_only=False).astype(np.float32)


class ShardCache:
    """LRU cache of standardized shard feature matrices (and weights), bounded in bytes;
    thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: str) -> Optional[np.ndarray]:
        """The cached standardized float32 [n, D] rows of the shard at `path`, or None."""
        item = self._get(path)
        return None if item is None else item[0]

    def _get(self, path: str) -> Optional[tuple]:
        """(rows, weights float32 [n] or None) of the shard at `path`, or None."""
        with self._lock:
            item = self._items.get(path)
            if item is not None:
                self._items.move_to_end(path)
            return item

    def batches(
        self,
        path: str,
        n_features: int,
        batch_size: int,
        cached_batch_size: Optional[int] = None,
        weighted: bool = False,
    ) -> Iterator:
        """Standardized float32 [<= batch_size, D] batches of the shard at `path`, in file order;
        `weighted`: (rows, their weights float32 [<= batch_size]) pairs.

        cached_batch_size: rows per batch when the shard is in the cache (default
        `batch_size`). Views of memory already there cost nothing to cut larger,
        whereas a read is fastest in batch_size chunks.
        """
        item = self._get(path)
        if item is not None and (item[1] is not None or not weighted):
            x, w = item
            step = cached_batch_size or batch_size
            for start in range(0, len(x), step):
                part = x[start : start + step]
                yield (part, w[start : start + step]) if weighted else part
            return
        # Filled in place as the batches stream by: one copy of the shard at
        # most, not a list of batches and then their concatenation.
        with _open_shard(path) as shard:
            n = _row_count(shard, path)
            # Aligned as TensorFlow's buffers are: the step reads batches of it in place.
            row_bytes = n_features * 4 + (4 if weighted else 0)
            kept = aligned_empty((n, n_features)) if n * row_bytes <= self.max_bytes else None
            kept_w = np.empty(n, np.float32) if kept is not None and weighted else None
            columns = [FEATURES_COLUMN] + ([WEIGHT_COLUMN] if weighted else [])
            start = 0
            for batch, x in _standardized(shard, path, n_features, batch_size, columns):
                w = row_weights(batch) if weighted else None
                if kept is not None:
                    kept[start : start + len(x)] = x
                    if weighted:
                        kept_w[start : start + len(x)] = w
                start += len(x)
                yield (x, w) if weighted else x
        if kept is not None:
            self._put(path, kept, kept_w)

    def _put(self, path: str, x: np.ndarray, w: Optional[np.ndarray] = None) -> None:
        nbytes = x.nbytes + (0 if w is None else w.nbytes)
        with self._lock:
            if path in self._items and (w is None or self._items[path][1] is not None):
                return
            old_item = self._items.pop(path, None)
            if old_item is not None:
                self._bytes -= sum(a.nbytes for a in old_item if a is not None)
            while self._items and self._bytes + nbytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= sum(a.nbytes for a in old if a is not None)
            self._items[path] = (x, w)
            self._bytes += nbytes


@functools.lru_cache(maxsize=None)
def get_shard_cache(max_mb: int) -> ShardCache:
    """The process-wide shard cache (one per size, built on first use)."""
    return ShardCache(max_mb << 20)
