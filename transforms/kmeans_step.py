"""The K-Means step in TensorFlow: nearest centroids and per-cluster partial sums.

One `KMeansStep` per worker process owns one `tf.distribute.MirroredStrategy`
(all local GPUs, a chosen subset, or the CPU) and one compiled step function.
A batch is split evenly across the strategy's replicas; the per-replica sums,
counts and inertia are reduced by the strategy, the per-row outputs are
concatenated back in row order.

Build it with `get_step(devices)`, from `DoFn.setup()`: it is cached per
process, so every round's DoFn shares the strategy and the compiled function
(XLA compiles once per batch-shape bucket, not once per round).
"""
import functools
import logging
from typing import NamedTuple, Optional

import numpy as np

# Rows of a batch are padded up to a power of two (at least this), so the
# compiled function sees a handful of shapes, not one per shard length.
_MIN_BUCKET = 256


class BatchResult(NamedTuple):
    """What the step returns for one float32 batch `x` [n, D] and centroids [K, D].

    labels:   int64 [n], index of the nearest centroid (first one on ties).
    sq_dist:  float32 [n], squared Euclidean distance to that centroid.
    sums:     float64 [K, D], per-cluster sum of the rows.
    counts:   int64 [K], rows per cluster.
    inertia:  float, sum of `sq_dist` (accumulated in float64).
    far_rows: int64 [c], row indices of the c rows farthest from their centroid,
              farthest first (candidates for re-seeding empty clusters).
    """

    labels: np.ndarray
    sq_dist: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    inertia: float
    far_rows: np.ndarray


def split_cpu(n: int) -> None:
    """Split the CPU into `n` logical devices (must run before TensorFlow initialises).

    This is how the multi-replica path of MirroredStrategy is exercised on a
    machine without GPUs.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def resolve_devices(spec: Optional[str]) -> Optional[list]:
    """Turn a `--devices` value into a device list for MirroredStrategy.

    None or "auto": all local GPUs, else the CPU (MirroredStrategy's default).
    "cpu": the CPU only, even when GPUs exist.
    "cpu:N": the CPU split into N logical devices (testing the multi-replica path).
    "gpu:0,2": those GPUs.
    """
    import tensorflow as tf

    if spec in (None, "", "auto"):
        return None
    if spec == "cpu":
        return ["/cpu:0"]
    kind, _, rest = spec.partition(":")
    if kind == "cpu" and rest.isdigit():
        n = int(rest)
        cpu = tf.config.list_physical_devices("CPU")[0]
        # Asking for the logical devices would initialise the runtime; the
        # configuration does not.
        if len(tf.config.get_logical_device_configuration(cpu) or []) < n:
            try:
                split_cpu(n)
            except RuntimeError:
                raise ValueError(
                    f"--devices={spec}: TensorFlow had started in this process before the CPU "
                    f"could be split into {n} devices; call resolve_devices() at process "
                    f"start (the shardmeans CLI does)") from None
        return [f"/cpu:{i}" for i in range(n)]
    if kind == "gpu" and rest:
        return [f"/gpu:{int(i)}" for i in rest.split(",")]
    raise ValueError(
        f"--devices={spec!r} is not one of: auto, cpu, cpu:N, gpu:I[,J...]")


@functools.lru_cache(maxsize=None)
def get_step(devices: Optional[str] = None, n_far: int = 16) -> "KMeansStep":
    """The process-wide KMeansStep for a `--devices` spec (built on first use)."""
    return KMeansStep(devices=devices, n_far=n_far)


class KMeansStep:
    """Nearest centroid and partial sums for batches, on all replicas of a strategy."""

    def __init__(self, devices: Optional[str] = None, n_far: int = 16):
        import tensorflow as tf

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
        logging.info("KMeansStep: %d replica(s): %s", self.n_replicas,
                     list(self.strategy.extended.worker_devices))
        self._replica = tf.function(self._replica_step, jit_compile=True)
        self._run = tf.function(self._distributed)

    def _replica_step(self, x, valid, centroids):
        """x float32 [b, D], valid bool [b], centroids float32 [K, D]."""
        tf = self._tf
        k = centroids.shape[0]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin.
        cross = tf.matmul(x, centroids, transpose_b=True)
        scores = tf.reduce_sum(centroids * centroids, axis=1)[tf.newaxis, :] - 2.0 * cross
        labels = tf.argmin(scores, axis=1, output_type=tf.int32)
        # The distance itself from the difference, not the expansion: no cancellation.
        diff = x - tf.gather(centroids, labels)
        sq_dist = tf.reduce_sum(diff * diff, axis=1)
        segments = tf.where(valid, labels, k)  # padding rows go to a dropped segment
        sums = tf.math.unsorted_segment_sum(tf.cast(x, tf.float64), segments, k + 1)[:k]
        counts = tf.math.unsorted_segment_sum(
            tf.ones_like(segments, dtype=tf.int64), segments, k + 1)[:k]
        masked = tf.where(valid, sq_dist, tf.zeros_like(sq_dist))
        inertia = tf.reduce_sum(tf.cast(masked, tf.float64))
        n_far = min(self.n_far, x.shape[0])
        _, far = tf.math.top_k(tf.where(valid, sq_dist, -tf.ones_like(sq_dist)), n_far)
        return labels, sq_dist, sums, counts, inertia, far

    def _distributed(self, xs, valids, centroids):
        tf = self._tf
        labels, sq_dist, sums, counts, inertia, far = self.strategy.run(
            self._replica, args=(xs, valids, centroids))
        total = lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
        local = lambda v: tf.concat(self.strategy.experimental_local_results(v), axis=0)
        return (local(labels), local(sq_dist), total(sums), total(counts), total(inertia),
                local(far))

    def __call__(self, x: np.ndarray, centroids: np.ndarray) -> BatchResult:
        """Run the step on `x` float32 [n, D] against `centroids` float32 [K, D]."""
        tf = self._tf
        n, d = x.shape
        r = self.n_replicas
        per_replica = max(_MIN_BUCKET, 1 << int(np.ceil(np.log2(max(1, -(-n // r))))))
        if n == per_replica * r:  # a full batch: no padding, no copy
            padded = np.ascontiguousarray(x, dtype=np.float32)
        else:
            padded = np.zeros((per_replica * r, d), dtype=np.float32)
            padded[:n] = x
        valid = np.arange(per_replica * r) < n

        def per_replica_slices(a):  # replica i gets rows [i * per_replica, (i + 1) * per_replica)
            return self.strategy.experimental_distribute_values_from_function(
                lambda ctx: a[ctx.replica_id_in_sync_group * per_replica:
                              (ctx.replica_id_in_sync_group + 1) * per_replica])

        labels, sq_dist, sums, counts, inertia, far = self._run(
            per_replica_slices(padded), per_replica_slices(valid),
            tf.constant(centroids, dtype=tf.float32))
        # Each replica's candidates index its own slice; make them batch indices,
        # drop padding, keep the n_far farthest overall.
        far = far.numpy().reshape(r, -1) + (np.arange(r) * per_replica)[:, None]
        far = far.ravel()
        far = far[far < n]
        sq = sq_dist.numpy()
        far = far[np.argsort(-sq[far], kind="stable")][: self.n_far]
        return BatchResult(
            labels=labels.numpy()[:n].astype(np.int64),
            sq_dist=sq[:n],
            sums=sums.numpy(),
            counts=counts.numpy(),
            inertia=float(inertia.numpy()),
            far_rows=far.astype(np.int64),
        )
