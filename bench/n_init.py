"""What --n_init buys and costs: `shardmeans fit` with R = 1, 2, 4, 8 restarts, alternated.

Usage: python bench/n_init.py [--rows 500000] [--features 32] [--clusters 100] [--k 64]
       [--restarts 1,2,4,8] [--restarts_on sample] [--repeats 2]
       [--workdir /tmp/shardmeans-bench]

Every run uses the defaults but --n_init and --restarts_on (k-means++ and
Lloyd on the init sample, then exact Lloyd over all rows). The data has more
blobs than K, so starts can end in different optima. Prints, per R, the
median wall time and the final inertia, both relative to R = 1. Then one more
fit of the largest R with --restarts_on all gives every restart's inertia on
the sample and over all rows; over windows of R consecutive seeds it prints
the expected final inertia of the best of R (restarts on all rows) and of
the start the sample picks (restarts on the sample), relative to one
restart: the quality curves without noise from the wall clock.
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
    parser.add_argument("--restarts_on", choices=["sample", "all"], default="sample")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/shardmeans-bench")
    args = parser.parse_args()
    restarts = [int(r) for r in args.restarts.split(",")]
    data_dir = os.path.join(args.workdir, f"data-{args.rows}x{args.features}-c{args.clusters}")
    if not os.path.isdir(data_dir):
        run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "generate",
                "--output",
                data_dir,
                "--rows",
                str(args.rows),
                "--features",
                str(args.features),
                "--clusters",
                str(args.clusters),
                "--shards",
                "8",
            ]
        )
    print(f"BLAS: {blas_info()}")
    print(
        f"data: {args.rows} rows x {args.features} features from {args.clusters} blobs, "
        f"K={args.k}, --restarts_on {args.restarts_on}, {args.repeats} repeats"
    )

    def fit(r, restarts_on):
        out = os.path.join(args.workdir, f"n_init-{r}")
        seconds, _ = run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "fit",
                "--input",
                os.path.join(data_dir, "*.parquet"),
                "--output",
                out,
                "--k",
                str(args.k),
                "--id_column",
                "id",
                "--n_init",
                str(r),
                "--restarts_on",
                restarts_on,
                "--overwrite",
            ]
        )
        with open(os.path.join(out, "metrics.json")) as f:
            return seconds, json.load(f)

    times = {r: [] for r in restarts}
    metrics = {}
    for _ in range(args.repeats):
        for r in restarts:
            seconds, metrics[r] = fit(r, args.restarts_on)
            times[r].append(seconds)

    base_t, base_i = statistics.median(times[1]), metrics[1]["inertia"]
    print(f"{'n_init':>6} {'wall s':>8} {'time / R=1':>11} {'rounds':>7} {'inertia / R=1':>14}")
    for r in restarts:
        t = statistics.median(times[r])
        print(
            f"{r:>6} {t:>8.1f} {t / base_t:>11.2f} {metrics[r]['rounds']:>7} "
            f"{metrics[r]['inertia'] / base_i:>14.4f}"
        )
    largest = max(restarts)
    if largest > 1:
        every = fit(largest, "all")[1]["restarts"]
        final = np.array([row["inertia"] for row in every])
        sample = np.array([row["sample_inertia"] for row in every])
        print(
            f"expected final inertia / one restart's, over windows of R of the {largest} "
            f"restarts of n_init={largest} --restarts_on all (spread of one restart: "
            f"{final.std() / final.mean():.2%}):"
        )
        print(f"{'R':>4} {'best on all rows':>17} {'best on the sample':>19}")
        for r in restarts:
            windows = [slice(i, i + r) for i in range(len(final) - r + 1)]
            best = np.mean([final[w].min() for w in windows])
            picked = np.mean([final[w][np.argmin(sample[w])] for w in windows])
            print(f"{r:>4} {best / final.mean():>17.4f} {picked / final.mean():>19.4f}")


if __name__ == "__main__":
    main()
