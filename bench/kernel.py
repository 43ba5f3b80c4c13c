"""The TensorFlow step alone against scikit-learn's Lloyd iteration, on the same in-memory array.

Usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/kernel.py [--rows 1000000]
       [--features 32] [--k 64] [--batch_size 65536] [--repeats 5]

The step: transforms.step.step.KMeansStep over the array as a round calls it
on a cached shard: calls of `KMeansStep.rows_per_call` rows, no per-row
results (nearest centroids, float64 sums, counts, inertia, the far rows); the
mean of 10 passes. scikit-learn: the cost of
one Lloyd iteration, (fit with max_iter=11 - fit with max_iter=1) / 10 (a fit
also does a final assignment pass). Alternated; medians and the ratio.
"""

import argparse
import statistics
import time

import numpy as np

# scikit-learn's iteration is the mean of this many (fit with ITERATIONS + 1 - fit
# with 1); the step's pass is the mean of as many.
ITERATIONS = 10


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import threadpoolctl
    from sklearn.cluster import KMeans

    from transforms.step.buffers import aligned_empty
    from transforms.step.step import KMeansStep

    rng = np.random.default_rng(0)
    # Aligned as the pipeline's shard cache is, so the step reads it in place.
    x = aligned_empty((args.rows, args.features))
    x[:] = rng.normal(size=(args.rows, args.features))
    c = x[rng.choice(args.rows, args.k, replace=False)].copy()
    step = KMeansStep()
    print("step:", "fused op" if step.native else "TensorFlow ops (XLA)")
    print(
        "BLAS:",
        [(i["internal_api"], i.get("architecture")) for i in threadpoolctl.threadpool_info()],
    )

    # Calls as a round makes them on a cached shard (transforms/beam/rounds.py): as
    # many rows as the step takes, and no per-row labels or distances (a round
    # needs the sums, counts, inertia and far rows).
    rows = step.rows_per_call(args.batch_size, [c])
    print(f"rows per call: {rows} (--batch_size {args.batch_size})")

    def tf_pass(passes=ITERATIONS):
        # One ~50 ms pass alone took the machine's noise of its moment with it.
        start = time.perf_counter()
        for _ in range(passes):
            for i in range(0, args.rows, rows):
                step.groups(x[i : i + rows], [c], per_row=False)
        return (time.perf_counter() - start) / passes

    def sk_fit(iters):
        start = time.perf_counter()
        KMeans(args.k, init=c, n_init=1, max_iter=iters, tol=0, algorithm="lloyd").fit(x)
        return time.perf_counter() - start

    tf_pass(1)  # compile
    tf_times, sk_times = [], []
    for _ in range(args.repeats):
        tf_times.append(tf_pass())
        sk_times.append((sk_fit(ITERATIONS + 1) - sk_fit(1)) / ITERATIONS)
    a, b = statistics.median(tf_times), statistics.median(sk_times)
    print(
        f"{args.rows} x {args.features}, K={args.k}: TF step {a * 1e3:.1f} ms, "
        f"scikit-learn Lloyd iteration {b * 1e3:.1f} ms, ratio {a / b:.2f}"
    )


if __name__ == "__main__":
    main()
