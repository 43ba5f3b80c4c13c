"""Built libraries of the fused op against each other: one call over 1M x 32 rows, K=64.

Usage: python bench/kernel_lab/op_builds.py LIB.so [LIB.so ...] [--rounds 3] [--calls 15]
       [--weighted]

Each library registers the same op name, so each is timed in a process of its
own; the libraries take turns (A B A B ...), each turn printing the median of
`--calls` calls as a round makes them (one call, no per-row results). --weighted passes every
row's weight (a weighted fit's call; the library must take weights); without it,
a library that takes weights gets none (the unweighted kernel), one that predates
them is called as it was. Build
the libraries by hand, e.g. two sources or two -march flags:

  c++ -march=x86-64-v3 -shared -fPIC -O3 -std=c++17 -pthread \\
      transforms/step/native/nearest_centroids.cc -o /tmp/avx2.so \\
      -I$(python -c 'import tensorflow as tf; print(tf.sysconfig.get_include())') \\
      $(python -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_link_flags()))')
"""

import argparse
import os
import subprocess
import sys

_ONE_LIBRARY = """
import inspect, sys, time
import numpy as np
import tensorflow as tf
from transforms.step.buffers import aligned_empty

lib = tf.load_op_library(sys.argv[1])
rng = np.random.default_rng(0)
x = aligned_empty((1_000_000, 32))
x[:] = rng.normal(size=x.shape)
centroids = x[rng.choice(len(x), 64, replace=False)][None].copy()
bias = np.zeros((1, 64), np.float32)
valid = np.ones(len(x), bool)
rows = tf.experimental.dlpack.from_dlpack(x.__dlpack__())  # in place, as a round passes it
inputs = [rows, valid, centroids, bias]
if "weights" in inspect.signature(lib.shardmeans_nearest_centroids).parameters:
    weighted = sys.argv[3] == "weighted"
    inputs.append(rng.integers(0, 4, len(x)).astype(np.float32) if weighted else np.zeros(0, np.float32))
call = tf.function(lambda: lib.shardmeans_nearest_centroids(*inputs, n_far=16, per_row=False))
call()
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
print(f"{np.median(times) * 1e3:.1f}")
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("libraries", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--weighted", action="store_true")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    times = {lib: [] for lib in args.libraries}
    for _ in range(args.rounds):
        for lib in args.libraries:
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _ONE_LIBRARY,
                    lib,
                    str(args.calls),
                    "weighted" if args.weighted else "plain",
                ],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            times[lib].append(done.stdout.strip().splitlines()[-1])
            print(f"{lib}: {times[lib][-1]} ms", flush=True)
    for lib, ms in times.items():
        print(f"{lib}: {', '.join(ms)} ms (median of {args.calls} calls, each turn)")


if __name__ == "__main__":
    main()
