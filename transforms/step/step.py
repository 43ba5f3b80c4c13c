"""The K-Means step in TensorFlow: nearest centroids and per-cluster partial sums.

One `KMeansStep` per worker process owns one `tf.distribute.MirroredStrategy`
(all local GPUs, a chosen subset, or the CPU) and one compiled step function.
A batch is split across the strategy's replicas (padded to equal power-of-two
slices for the XLA step, as it comes for the fused op); the per-replica sums,
counts and inertia are reduced by the strategy, the per-row outputs are
concatenated back in row order.

`step.groups(x, [c_1, ..., c_G])` scores a batch against several sets of
centroids at once (the restarts and Ks fitted together): one matrix product
against all of them, then argmin, distances and sums per set.

On CPU replicas the per-replica work is one fused TensorFlow op
(`native.build`, compiled on first use): it scores a few rows against the
centroids in registers and takes the argmin, distance and float64 sums while
the rows are in cache. On GPUs, or where the op cannot be built, it is the
same step in TensorFlow's own ops compiled by XLA (a matrix product, argmin,
gather and segment sums, each a pass over memory on CPU).

Weighted fits (sample weights) pass each row's weight: the sums, inertia and
per-cluster weight sums are then weighted (sum of w x, of w d^2, of w), by
their own trace of the XLA step and their own instance of the op's kernel, so
that an unweighted call runs the kernel it ran before weights (its only extra:
the counts returned once more, as float64 weight sums, [G, K]).

Build it with `get_step(devices)`, from `DoFn.setup()`: it is cached per
process, so every round's DoFn shares the strategy and the compiled function
(the XLA step traced once per batch-shape bucket and candidate layout, the op
once per candidate layout whatever the row count; never once per round).
"""

import functools
import logging
from typing import List, NamedTuple, Optional, Sequence

import numpy as np

from transforms.step.buffers import (
    _MIN_BUCKET,
    CALL_BUDGET_BYTES,
    TF_ALIGN_BYTES,
    aligned_empty,
    rows_per_call,
)
from transforms.step.devices import resolve_devices

# Largest centroid set (G x K x D float32) the fused op scores; larger ones go to
# the XLA step. The op re-reads every centroid for each few rows: it wins while
# they stay in the core's cache, XLA's blocked product beyond; the bound sits
# where they crossed (bench/RESULTS.md, 'The op against XLA by shape').
NATIVE_MAX_CENTROID_BYTES = 1 << 20


class BatchResult(NamedTuple):
    """What the step returns for one float32 batch `x` [n, D] and centroids [K, D].

    labels:   int64 [n], index of the nearest centroid (first one on ties);
              None when the call asked for no per-row results (`per_row=False`).
    sq_dist:  float32 [n], squared Euclidean distance to that centroid (or None).
    sums:     float64 [K, D], per-cluster sum of the rows.
    counts:   int64 [K], rows per cluster.
    inertia:  float, sum of the squared distances (accumulated in float64).
    far_rows: int64 [c], row indices of the c rows farthest from their centroid,
              farthest first (candidates for re-seeding empty clusters).
    far_sq_dist: float32 [c], their squared distances.
    far_labels:  int64 [c], their nearest centroids.
    weights:  float64 [K], per-cluster sum of the rows' weights, when the call had
              weights (then `sums` and `inertia` are weighted, and a row of weight 0
              is never a far row); else None.
    """

    labels: Optional[np.ndarray]
    sq_dist: Optional[np.ndarray]
    sums: np.ndarray
    counts: np.ndarray
    inertia: float
    far_rows: np.ndarray
    far_sq_dist: np.ndarray
    far_labels: np.ndarray
    weights: Optional[np.ndarray] = None


@functools.lru_cache(maxsize=None)
def get_step(devices: Optional[str] = None, n_far: int = 16) -> "KMeansStep":
    """The process-wide KMeansStep for a `--devices` spec (built on first use)."""
    return KMeansStep(devices=devices, n_far=n_far)


class KMeansStep:
    """Nearest centroid and partial sums for batches, on all replicas of a strategy.

    native: use the fused op on CPU replicas, for centroid sets up to
    NATIVE_MAX_CENTROID_BYTES (None: when it builds; True: it must build; False:
    TensorFlow's own ops, as on GPUs).
    """

    def __init__(
        self, devices: Optional[str] = None, n_far: int = 16, native: Optional[bool] = None
    ):
        import tensorflow as tf

        from transforms.step.native import build as native_op

        for gpu in tf.config.list_physical_devices("GPU"):
            # tf.Transform and the step may share the GPUs of a worker.
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised: nothing to change
                pass
        self._tf = tf
        self.strategy = tf.distribute.MirroredStrategy(devices=resolve_devices(devices))
        self.n_replicas = self.strategy.num_replicas_in_sync
        self.n_far = n_far
        on_cpu = all("CPU" in d.upper() for d in self.strategy.extended.worker_devices)
        self._op = native_op.load() if on_cpu and native is not False else None
        if native and self._op is None:
            raise RuntimeError(
                "KMeansStep(native=True): the fused op is not available "
                "on these devices or could not be built (see the log)"
            )
        logging.getLogger(__name__).info(
            "KMeansStep: %d replica(s): %s; %s",
            self.n_replicas,
            list(self.strategy.extended.worker_devices),
            "fused op" if self._op else "TensorFlow ops (XLA)",
        )
        # autograph=False: the step has no Python control flow on tensors, and
        # converting it would lengthen every trace (one per batch shape and layout)
        # for nothing (bench/RESULTS.md, 'Fixed costs').
        xla_step = tf.function(self._replica_step, jit_compile=True, autograph=False)
        self._run_xla = {
            weighted: tf.function(functools.partial(self._distributed, xla_step), autograph=False)
            for weighted in (False, True)
        }
        # The op is traced inline into the strategy's function (it has no XLA kernel).
        # reduce_retracing: after a second row count the trace takes any. Without
        # per-row results (a round's partial sums), the op writes no labels or
        # distances: 16 bytes a row less to allocate, write and convert.
        # Weighted calls have functions of their own: their weights' shape ([rows],
        # not [0]) would otherwise retrace the unweighted ones.
        self._run_op = {
            (per_row, weighted): tf.function(
                functools.partial(
                    self._distributed, functools.partial(self._native_step, per_row=per_row)
                ),
                autograph=False,
                reduce_retracing=True,
            )
            for per_row in (True, False)
            for weighted in (False, True)
        }

    @property
    def native(self) -> bool:
        """Whether the replicas run the fused op (else TensorFlow's own ops)."""
        return self._op is not None

    def fused_for(self, packed: np.ndarray) -> bool:
        """Whether a call against `packed` centroids float32 [G, K, D] runs the fused op.

        The op re-reads all centroids for every 4 rows; past NATIVE_MAX_CENTROID_BYTES
        they no longer stay in the core's cache and XLA's blocked product is faster.
        """
        return self._fused_for_bytes(packed.nbytes)

    def _fused_for_bytes(self, nbytes: int) -> bool:
        return self._op is not None and nbytes <= NATIVE_MAX_CENTROID_BYTES

    def rows_per_call(self, batch_size: int, centroids: Sequence[np.ndarray]) -> int:
        """Rows per call against `centroids` (G arrays [K_g, D]) when the rows are
        already in memory (a cached shard): see `buffers.rows_per_call`."""
        k_max, d = max(len(c) for c in centroids), centroids[0].shape[1]
        fused = self._fused_for_bytes(len(centroids) * k_max * d * 4)
        return rows_per_call(batch_size, centroids, fused)

    def _native_step(self, x, valid, centroids, bias, w=None, per_row=True):
        """`_replica_step`'s contract, as one fused op (labels and sq_dist [0, G]
        unless per_row)."""
        if w is None:
            w = self._tf.zeros([0], self._tf.float32)  # the op's unweighted kernel
        outputs = self._op.shardmeans_nearest_centroids(
            x, valid, centroids, bias, w, n_far=self.n_far, per_row=per_row
        )
        # The op's own shape function cannot read its attributes (TensorFlow's C
        # API has no way to): the shapes that depend on them are set here.
        rows, g = x.shape[0] if per_row else 0, centroids.shape[0]
        far = None if x.shape[0] is None else min(self.n_far, x.shape[0])
        for i, shape in [
            (0, [rows, g]),
            (1, [rows, g]),
            (5, [g, far]),
            (6, [g, far]),
            (7, [g, far]),
        ]:
            outputs[i].set_shape(shape)
        return tuple(outputs)

    def _replica_step(self, x, valid, centroids, bias, w=None):
        """x float32 [b, D], valid bool [b], centroids float32 [G, K, D], bias float32 [G, K],
        w float32 [b] the rows' weights or None.

        G groups of K centroids (restarts, or the Ks of a sweep padded to the
        largest): one matrix product against all G*K, then everything per group.
        `bias` is 0 for a real centroid and +inf for padding, which never wins.
        """
        tf = self._tf
        g, k, d = centroids.shape
        flat = tf.reshape(centroids, [g * k, d])
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin.
        cross = tf.matmul(x, flat, transpose_b=True)
        norms = tf.reduce_sum(flat * flat, axis=1) + tf.reshape(bias, [g * k])
        scores = tf.reshape(norms[tf.newaxis, :] - 2.0 * cross, [-1, g, k])
        labels = tf.argmin(scores, axis=2, output_type=tf.int32)  # [b, G]
        index = labels + tf.range(g, dtype=tf.int32)[tf.newaxis, :] * k  # into the G*K centroids
        # The distance itself from the difference, not the expansion: no cancellation.
        diff = x[:, tf.newaxis, :] - tf.gather(flat, index)  # [b, G, D]
        sq_dist = tf.reduce_sum(diff * diff, axis=2)  # [b, G]
        segments = tf.where(valid[:, tf.newaxis], index, g * k)  # padding: a dropped segment
        x64 = tf.cast(x, tf.float64)
        if w is not None:
            w64 = tf.cast(w, tf.float64)
            x64 = x64 * w64[:, tf.newaxis]
        x64 = tf.broadcast_to(x64[:, tf.newaxis, :], [tf.shape(x)[0], g, d])
        sums = tf.math.unsorted_segment_sum(x64, segments, g * k + 1)[: g * k]
        counts = tf.math.unsorted_segment_sum(
            tf.ones_like(segments, dtype=tf.int64), segments, g * k + 1
        )[: g * k]
        masked = tf.cast(
            tf.where(valid[:, tf.newaxis], sq_dist, tf.zeros_like(sq_dist)), tf.float64
        )
        far_rows = valid
        if w is None:
            weight_sums = tf.cast(counts, tf.float64)
        else:
            weight_sums = tf.math.unsorted_segment_sum(
                tf.broadcast_to(w64[:, tf.newaxis], [tf.shape(x)[0], g]), segments, g * k + 1
            )[: g * k]
            masked = masked * w64[:, tf.newaxis]
            far_rows = valid & (w > 0)  # a row of weight 0 cannot re-seed a cluster
        inertia = tf.reduce_sum(masked, axis=0)  # [G]
        n_far = min(self.n_far, x.shape[0])
        far_sq, far = tf.math.top_k(
            tf.transpose(tf.where(far_rows[:, tf.newaxis], sq_dist, -tf.ones_like(sq_dist))), n_far
        )
        far_labels = tf.gather(tf.transpose(labels), far, batch_dims=1)  # [G, n_far]
        return (
            labels,
            sq_dist,
            tf.reshape(sums, [g, k, d]),
            tf.reshape(counts, [g, k]),
            inertia,
            far,
            far_sq,
            far_labels,
            tf.reshape(weight_sums, [g, k]),
        )

    def _distributed(self, replica_step, xs, valids, centroids, bias, ws=None):
        tf = self._tf
        args = (xs, valids, centroids, bias) + (() if ws is None else (ws,))
        outputs = self.strategy.run(replica_step, args=args)
        labels, sq_dist, sums, counts, inertia, far, far_sq, far_labels, weight_sums = outputs
        total = lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
        local = lambda v, axis: tf.concat(self.strategy.experimental_local_results(v), axis=axis)
        return (
            local(labels, 0),
            local(sq_dist, 0),
            total(sums),
            total(counts),
            total(inertia),
            local(far, 1),
            local(far_sq, 1),
            local(far_labels, 1),
            total(weight_sums),
        )

    def _as_tensor(self, a: np.ndarray):
        """`a` as a CPU tensor: its own memory when aligned (DLPack), else a copy."""
        if (
            a.flags.c_contiguous
            and a.flags.writeable
            and a.size
            and a.ctypes.data % TF_ALIGN_BYTES == 0
        ):
            return self._tf.experimental.dlpack.from_dlpack(a.__dlpack__())
        return self._tf.convert_to_tensor(a)

    def __call__(
        self, x: np.ndarray, centroids: np.ndarray, weights: Optional[np.ndarray] = None
    ) -> BatchResult:
        """Run the step on `x` float32 [n, D] against `centroids` float32 [K, D]
        (`weights` float32 [n]: weighted, see `groups`)."""
        return self.groups(x, [centroids], weights=weights)[0]

    def groups(
        self,
        x: np.ndarray,
        centroids: Sequence[np.ndarray],
        per_row: bool = True,
        weights: Optional[np.ndarray] = None,
    ) -> List[BatchResult]:
        """Run the step on `x` float32 [n, D] against G groups of centroids at once.

        centroids: G arrays float32 [K_g, D] (the K_g may differ). One pass over
        `x`, one matrix product against all of them; one BatchResult per group.
        per_row: False leaves out the labels and distances of every row (None in
        the results); the sums, counts, inertia and far rows are the same.
        weights: float [n], each row's weight (finite, >= 0), or None: the sums and
        inertia are weighted, and each result has the clusters' weight sums.
        """
        packed, bias = _pack(centroids)
        fused = self.fused_for(packed)
        rows, valid, starts = self._split_rows(x, fused)
        weighted = weights is not None
        run = self._run_op[per_row, weighted] if fused else self._run_xla[weighted]
        args = [
            self._replica_values(rows, starts),
            self._replica_values(valid, starts),
            self._tf.constant(packed),
            self._tf.constant(bias),
        ]
        if weighted:
            w = np.zeros(starts[-1], np.float32)  # padding rows weigh 0
            w[: len(x)] = weights
            args.append(self._replica_values(w, starts))
        outputs = run(*args)
        # np.asarray: a view of each result tensor (.numpy() would copy it)
        return self._unpack(
            [np.asarray(o) for o in outputs], centroids, len(x), starts, per_row, weighted
        )

    def _split_rows(self, x: np.ndarray, fused: bool):
        """`x` float32 [n, D] -> (rows float32 [N, D], valid bool [N], starts [R + 1]):
        replica i gets rows[starts[i]:starts[i + 1]]; rows past n are padding."""
        n, d = x.shape
        r = self.n_replicas
        if fused:  # the batch in place, split across the replicas as evenly as it goes
            starts = [i * n // r for i in range(r + 1)]
            rows = x if x.dtype == np.float32 else x.astype(np.float32)
        else:  # padded to the replicas' bucket (see _MIN_BUCKET)
            per_replica = max(_MIN_BUCKET, 1 << int(np.ceil(np.log2(max(1, -(-n // r))))))
            starts = [i * per_replica for i in range(r + 1)]
            if n == starts[r]:  # a full bucket: no padding, no copy
                rows = x if x.dtype == np.float32 else x.astype(np.float32)
            else:
                rows = aligned_empty((starts[r], d))
                rows[:n] = x
                rows[n:] = 0.0
        valid = np.zeros(starts[r], bool)
        valid[:n] = True
        return rows, valid, starts

    def _replica_values(self, a: np.ndarray, starts: List[int]):
        """`a` [N, ...] as the strategy's per-replica values: replica i gets
        a[starts[i]:starts[i + 1]] (one replica: the whole of `a`)."""
        if self.n_replicas == 1:
            return self._as_tensor(a)

        def part(ctx):
            i = ctx.replica_id_in_sync_group
            return self._as_tensor(a[starts[i] : starts[i + 1]])

        return self.strategy.experimental_distribute_values_from_function(part)

    def _unpack(
        self,
        outputs: List[np.ndarray],
        centroids: Sequence[np.ndarray],
        n: int,
        starts: List[int],
        per_row: bool,
        weighted: bool = False,
    ) -> List[BatchResult]:
        """The distributed step's outputs (see `_distributed`) -> one BatchResult per group,
        without the padding rows and padding centroids."""
        labels, sq, sums, counts, inertia, far, far_sq, far_labels, weight_sums = outputs
        r = self.n_replicas
        # Each replica's candidates index its own rows: make them batch indices.
        per_replica = [min(self.n_far, b - a) for a, b in zip(starts, starts[1:])]
        far = far + np.repeat(starts[:r], per_replica)[None, :]
        results = []
        for i, c in enumerate(centroids):
            # Drop padding rows, keep the n_far farthest overall (replicas in row order).
            real = np.flatnonzero(far[i] < n)
            keep = real[np.argsort(-far_sq[i, real], kind="stable")][: self.n_far]
            results.append(
                BatchResult(
                    labels=labels[:n, i].astype(np.int64) if per_row else None,
                    sq_dist=sq[:n, i] if per_row else None,
                    sums=sums[i, : len(c)],
                    counts=counts[i, : len(c)],
                    inertia=float(inertia[i]),
                    far_rows=far[i, keep].astype(np.int64),
                    far_sq_dist=far_sq[i, keep],
                    far_labels=far_labels[i, keep].astype(np.int64),
                    weights=weight_sums[i, : len(c)] if weighted else None,
                )
            )
        return results


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, n: int):
    """The `n` nearest centroids of each row: `x` float32 [b, D], `centroids` float32
    [K, D], 1 <= n <= K -> (ids int64 [b, n], squared Euclidean distances float32
    [b, n]), nearest first, ties to the lowest id.

    The fused op keeps only the nearest; this scores every row against every
    centroid in TensorFlow, so only a pass that asks for top-n pays for it. The
    order is the model's (`transforms.step.export`): the expansion |c|^2 - 2 x.c,
    `tf.math.top_k` on its negation (which puts the lower index first on ties);
    the distances are from the differences (no cancellation), as the step's.
    The rows go in calls whose temporaries (the scores [rows, K] and the differences
    [rows, n, D]) stay within CALL_BUDGET_BYTES.
    """
    x, centroids = np.asarray(x, np.float32), np.asarray(centroids, np.float32)
    k, d = centroids.shape
    step = max(1, CALL_BUDGET_BYTES // (4 * (k + n * d)))
    ids, sq_dist = [], []
    for start in range(0, max(len(x), 1), step):
        out = _nearest_fn()(x[start : start + step], centroids, np.int32(n))
        ids.append(out[0].numpy())
        sq_dist.append(out[1].numpy())
    return np.concatenate(ids), np.concatenate(sq_dist)


@functools.lru_cache(maxsize=None)
def _nearest_fn():
    import tensorflow as tf

    def nearest(x, c, n):
        scores = tf.reduce_sum(c * c, axis=1)[tf.newaxis, :] - 2.0 * tf.matmul(
            x, c, transpose_b=True
        )
        ids = tf.math.top_k(-scores, n).indices  # [b, n]
        diff = x[:, tf.newaxis, :] - tf.gather(c, ids)  # [b, n, D]
        return tf.cast(ids, tf.int64), tf.reduce_sum(diff * diff, axis=2)

    spec = tf.TensorSpec([None, None], tf.float32)
    return tf.function(
        nearest, input_signature=[spec, spec, tf.TensorSpec([], tf.int32)], autograph=False
    )


def _pack(centroids: Sequence[np.ndarray]):
    """G arrays float32 [K_g, D] -> (packed float32 [G, K, D], bias float32 [G, K]),
    K = max K_g: the groups padded to K rows, bias 0 for a real centroid and +inf for
    padding (which never wins the argmin)."""
    g, k, d = len(centroids), max(len(c) for c in centroids), centroids[0].shape[1]
    packed = np.zeros((g, k, d), np.float32)
    bias = np.full((g, k), np.inf, np.float32)
    for i, c in enumerate(centroids):
        packed[i, : len(c)] = c
        bias[i, : len(c)] = 0.0
    return packed, bias
