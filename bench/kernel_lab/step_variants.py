"""Side-by-side: the current K-Means step, fused variants, scikit-learn's Lloyd iteration.

Usage (always without the OpenBLAS variables):
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python bench/kernel_lab/step_variants.py \
      [--rows 1000000] [--features 32] [--k 64] [--batch 65536] [--repeats 7] \
      [--variants kmstep current::0:xla map:oh32r:4096:xla ...] [--check_only] [--G 1]

A variant is `loop:sums:tile:mode` (see variants.body_fused), or `current::0:xla|graph`
(the current body, generalized to G groups), or `best::TILE:xla` (best_step.replica_step),
or `kmstep` (transforms.step.step.KMeansStep as the pipeline calls it, G=1 only). Every
variant is first checked against a NumPy float64 reference (padding rows, +inf bias,
offset and standardized data, G groups), then all are timed over the same in-memory
rows, alternating (rotated order each repeat) with scikit-learn's
lloyd_iter_chunked_dense (one Lloyd iteration, the same call KMeans.fit makes, with its
threadpool settings). Medians, minima, ratios.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

DEFAULT_VARIANTS = [
    "kmstep",
    "current::0:xla",
    "best::8192:xla",
    "t:seg64:0:xla",
    "tp:seg64:8192:xla",
    "full:seg64:0:xla",
    "batched:oh32r:1024:xla",
]


def build(name, G, K, n_far):
    import tensorflow as tf
    import variants

    loop, sums, tile, mode = name.split(":")
    if loop == "best":  # best_step.replica_step, the drop-in body
        import functools

        import best_step

        body = functools.partial(best_step.replica_step, G=G, K=K, n_far=n_far, tile=int(tile))
    elif loop == "current":
        body = variants.body_current(G, K, n_far)
    elif loop.startswith(
        "t"
    ):  # t | tp (packed argmin) | tcol | tpcol (distance in [D, rows] layout)
        body = variants.body_t(
            G,
            K,
            n_far,
            tile=int(tile),
            sums=sums,
            argmin="packed" if loop.startswith("tp") else "first",
            dist="col" if loop.endswith("col") else "row",
        )
    else:
        body = variants.body_fused(
            G, K, n_far, tile=int(tile), sums=sums, loop="batched" if loop == "batched" else "map"
        )
    return tf.function(body, jit_compile=(mode == "xla")), int(tile)


def pad_to(n, tile):
    b = max(256, 1 << int(np.ceil(np.log2(max(1, n)))))
    return max(b, tile)


def run_variant(fn, xb, vb, c, bias):
    out = fn(xb, vb, c, bias)
    return [o.numpy() for o in out]


def reference_check(out, x, valid, c, bias, G, K, n_far):
    """Errors of one variant's outputs against NumPy float64 (using its own labels
    for the sums, so the accumulation is checked apart from near-tie label choices)."""
    labels, sq, sums, counts, inertia, far = out
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    b, D = x.shape
    scores = ((c64 * c64).sum(1) + bias)[None, :] - 2.0 * (x64 @ c64.T)
    scores = scores.reshape(b, G, K)
    ref_lab = scores.argmin(-1)
    v = valid
    mism = int(((labels != ref_lab) & v[:, None]).sum())
    gap = (
        np.take_along_axis(scores, labels[..., None].astype(np.int64), -1)[..., 0]
        - np.take_along_axis(scores, ref_lab[..., None], -1)[..., 0]
    )
    regret = float(gap[v].max()) if v.any() else 0.0
    flat = labels.astype(np.int64) + np.arange(G)[None, :] * K
    sq64 = ((x64[:, None, :] - c64[flat]) ** 2).sum(-1)
    sq_rel = float((np.abs(sq[v] - sq64[v]) / np.maximum(sq64[v], 1e-30)).max())
    oh = np.zeros((b, G * K))
    rows = np.nonzero(v)[0]
    for g in range(G):
        oh[rows, flat[rows, g]] = 1.0
    ref_sums = oh.T @ x64
    ref_abs = oh.T @ np.abs(x64)  # condition scale: sum of |x| per entry
    ref_counts = oh.sum(0).astype(np.int64)
    err = np.abs(sums - ref_sums)
    sums_norm = float(err.max() / max(np.abs(ref_sums).max(), 1e-300))
    sums_cond = float((err / np.maximum(ref_abs, 1e-300)).max())
    ref_inertia = np.where(v[:, None], sq.astype(np.float64), 0).sum(0)
    inertia_rel = float((np.abs(inertia - ref_inertia) / np.maximum(ref_inertia, 1e-300)).max())
    # far: (-sq, index) order among valid rows, padding only to fill
    far_ok = True
    nf = min(n_far, b)
    for g in range(G):
        key = np.where(v, sq[:, g].astype(np.float64), -1.0)
        order = np.lexsort((np.arange(b), -key))[:nf]
        far_ok &= bool(np.array_equal(np.asarray(far[g]), order))
    return dict(
        label_mismatch=mism,
        regret=regret,
        sq_rel=sq_rel,
        sums_norm=sums_norm,
        sums_cond=sums_cond,
        counts_ok=bool(np.array_equal(counts, ref_counts)),
        inertia_rel=inertia_rel,
        far_ok=far_ok,
        dtypes=",".join(str(np.asarray(o).dtype) for o in out),
    )


def check_all(names, G_list, K, D, n_far, batch):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    for G in G_list:
        for data in ("std", "offset3"):
            n = batch - batch // 10  # padded batch
            x = rng.normal(size=(batch, D)).astype(np.float32)
            if data == "offset3":
                x += 3.0
            x[n:] = 0.0
            valid = np.arange(batch) < n
            c = x[rng.choice(n, G * K, replace=False)].copy()
            c[1] = c[0]  # an exact tie: first index must win
            bias = np.zeros(G * K, np.float32)
            bias[[2, 5]] = np.inf
            for name in names:
                if name == "kmstep":
                    continue
                fn, tile = build(name, G, K, n_far)
                out = run_variant(
                    fn, tf.constant(x), tf.constant(valid), tf.constant(c), tf.constant(bias)
                )
                r = reference_check(out, x, valid, c, bias, G, K, n_far)
                print(
                    f"check G={G} {data:8s} {name:26s} "
                    + " ".join(
                        f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                    ),
                    flush=True,
                )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--batch", type=int, default=65536)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--n_far", type=int, default=16)
    p.add_argument("--G", type=int, nargs="+", default=[1, 3])
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    p.add_argument("--check_only", action="store_true")
    p.add_argument("--no_check", action="store_true")
    p.add_argument("--no_sklearn", action="store_true")
    a = p.parse_args()

    import tensorflow as tf
    import threadpoolctl

    if os.environ.get("TF_INTRA"):  # settable after import, before the first op runs
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["TF_INTRA"]))
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ.get("TF_INTER", "1")))
    from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    print(
        "TF",
        tf.__version__,
        "TF_ENABLE_ONEDNN_OPTS=%s XLA_FLAGS=%s intra=%s inter=%s"
        % (
            os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            os.environ.get("XLA_FLAGS"),
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        ),
        flush=True,
    )
    if not a.no_check:
        check_all(a.variants, a.G, a.k, a.features, a.n_far, min(a.batch, 65536))
    if a.check_only:
        return

    rng = np.random.default_rng(0)  # the data of bench/kernel.py
    x = rng.normal(size=(a.rows, a.features)).astype(np.float32)
    c = x[rng.choice(a.rows, a.k, replace=False)].copy()
    ct, bt = tf.constant(c), tf.constant(np.zeros(a.k, np.float32))

    passes = {}
    for name in a.variants:
        if name == "kmstep":
            from transforms.step.step import KMeansStep

            step = KMeansStep()

            def kpass(step=step):
                for i in range(0, a.rows, a.batch):
                    step(x[i : i + a.batch], c)

            passes[name] = kpass
            continue
        fn, tile = build(name, 1, a.k, a.n_far)

        def vpass(fn=fn, tile=tile):
            for i in range(0, a.rows, a.batch):
                xb = x[i : i + a.batch]
                n = len(xb)
                b = pad_to(n, tile)
                if n < b:
                    xp = np.zeros((b, a.features), np.float32)
                    xp[:n] = xb
                    xb = xp
                run_variant(fn, xb, np.arange(b) < n, ct, bt)

        passes[name] = vpass

    if not a.no_sklearn:
        n_threads = _openmp_effective_n_threads()
        sw = np.ones(a.rows, np.float32)
        lab = np.zeros(a.rows, np.int32)

        def skpass():
            cn, wic = np.empty_like(c), np.zeros(a.k, np.float32)
            shift = np.zeros(a.k, np.float32)
            with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
                lloyd_iter_chunked_dense(x, sw, c, cn, wic, lab, shift, n_threads)

        passes["sklearn lloyd iter"] = skpass

    names = list(passes)
    for n in names:  # warm-up and compile every shape
        passes[n]()
        passes[n]()
    times = {n: [] for n in names}
    for r in range(a.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t = time.perf_counter()
            passes[n]()
            times[n].append(time.perf_counter() - t)
    sk = statistics.median(times["sklearn lloyd iter"]) if not a.no_sklearn else None
    print(f"\n{a.rows} x {a.features}, K={a.k}, batch {a.batch}, {a.repeats} alternated repeats")
    print(f"{'variant':28s} {'median ms':>9s} {'min ms':>8s} {'ratio(med)':>10s}")
    for n in names:
        m = statistics.median(times[n]) * 1e3
        print(
            f"{n:28s} {m:9.1f} {min(times[n]) * 1e3:8.1f} "
            f"{(m / sk / 1e3) if sk else float('nan'):10.2f}"
        )


if __name__ == "__main__":
    main()
