"""What --n_init buys and costs: `shardmeans fit` with R = 1, 2, 4, 8 restarts, alternated.

Usage: python bench/n_init.py [--rows 500000] [--features 32] [--clusters 100] [--k 64]
       [--restarts 1,2,4,8] [--repeats 2] [--workdir /tmp/shardmeans-bench]

Every run uses the defaults but --n_init (k-means++ and Lloyd on the init
sample, then exact Lloyd over all rows). The data has more blobs than K, so
starts can end in different optima. Prints, per R, the median wall time and
the final inertia, both relative to R = 1; and, from the restarts the largest
R reports in metrics.json, the expected best inertia of R restarts (the mean
over windows of R consecutive seeds) relative to one restart: the quality
curve without noise from the wall clock.
"""
import argparse
import json
import os
import statistics
import sys

import numpy as np

from side_by_side import blas_info, run  # same environment (BLAS variables unset)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--restarts", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/shardmeans-bench")
    args = parser.parse_args()
    restarts = [int(r) for r in args.restarts.split(",")]
    data_dir = os.path.join(args.workdir, f"data-{args.rows}x{args.features}-c{args.clusters}")
    if not os.path.isdir(data_dir):
        run([sys.executable, "-m", "pipeline", "generate", "--output", data_dir, "--rows",
             str(args.rows), "--features", str(args.features), "--clusters", str(args.clusters),
             "--shards", "8"])
    print(f"BLAS: {blas_info()}")
    print(f"data: {args.rows} rows x {args.features} features from {args.clusters} blobs, "
          f"K={args.k}, {args.repeats} repeats")

    times = {r: [] for r in restarts}
    metrics = {}
    for _ in range(args.repeats):
        for r in restarts:
            out = os.path.join(args.workdir, f"n_init-{r}")
            seconds, _ = run([sys.executable, "-m", "pipeline", "fit", "--input",
                              os.path.join(data_dir, "*.parquet"), "--output", out,
                              "--k", str(args.k), "--id_column", "id", "--n_init", str(r),
                              "--overwrite"])
            times[r].append(seconds)
            with open(os.path.join(out, "metrics.json")) as f:
                metrics[r] = json.load(f)

    base_t, base_i = statistics.median(times[1]), metrics[1]["inertia"]
    print(f"{'n_init':>6} {'wall s':>8} {'time / R=1':>11} {'rounds':>7} {'inertia / R=1':>14}")
    for r in restarts:
        t = statistics.median(times[r])
        print(f"{r:>6} {t:>8.1f} {t / base_t:>11.2f} {metrics[r]['rounds']:>7} "
              f"{metrics[r]['inertia'] / base_i:>14.4f}")
    largest = max(restarts)
    single = np.array([row["inertia"] for row in metrics[largest].get("restarts", [])])
    if len(single) > 1:
        print(f"expected best of R restarts / one restart (from the {largest} restarts of "
              f"n_init={largest}; spread of one restart: {single.std() / single.mean():.2%}):")
        for r in restarts:
            windows = [single[i:i + r].min() for i in range(len(single) - r + 1)]
            print(f"  R={r}: {np.mean(windows) / single.mean():.4f}")


if __name__ == "__main__":
    main()
