"""GFLOP/s of the bare [rows, 32] x [32, 64] float32 matmul in this process's TF settings.

Eager (oneDNN sgemm or Eigen), tf.function graph, XLA (YNNPACK dot by default), XLA matmul+row-min
(output not written back). Min over 30 alternated calls (quiet-machine estimate) and median.
Settings are read at TF import: run one process per setting, e.g.
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE TF_ENABLE_ONEDNN_OPTS=0 python matmul_settings.py
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python matmul_settings.py   (XLA dot -> Eigen)
  TF_INTRA=1 python matmul_settings.py
"""

import os
import statistics
import time

import numpy as np
import tensorflow as tf

if os.environ.get("TF_INTRA"):
    tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["TF_INTRA"]))
    tf.config.threading.set_inter_op_parallelism_threads(1)
rng = np.random.default_rng(0)
K, D = 64, 32
ct = tf.constant(rng.normal(size=(K, D)).astype(np.float32))
g = tf.function(lambda a, b: tf.matmul(a, b, transpose_b=True))
gx = tf.function(lambda a, b: tf.matmul(a, b, transpose_b=True), jit_compile=True)
gm = tf.function(lambda a, b: tf.reduce_min(tf.matmul(a, b, transpose_b=True), 1), jit_compile=True)
tag = os.environ.get("TAG", "default")
for rows in (65536, 16384, 4096):
    xt = tf.constant(rng.normal(size=(rows, D)).astype(np.float32))
    reps = 65536 // rows
    cands = {
        "eager": lambda: tf.matmul(xt, ct, transpose_b=True).numpy(),
        "graph": lambda: g(xt, ct).numpy(),
        "xla": lambda: gx(xt, ct).numpy(),
        "xla+min": lambda: gm(xt, ct).numpy(),
    }
    T = {k: [] for k in cands}
    for k in cands:
        cands[k]()
        cands[k]()
    for r in range(30):
        for k in cands:
            t = time.perf_counter()
            for _ in range(reps):
                cands[k]()
            T[k].append((time.perf_counter() - t) / reps)
    fl = 2 * rows * K * D
    print(
        f"{tag:34s} rows={rows:6d} "
        + " | ".join(
            f"{k} {fl / min(T[k]) / 1e9:4.0f} ({fl / statistics.median(T[k]) / 1e9:3.0f})"
            for k in cands
        ),
        flush=True,
    )
