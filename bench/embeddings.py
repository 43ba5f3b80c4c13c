"""Spherical K-Means on an embedding column: shardmeans against FAISS and scikit-learn.

Usage: python bench/embeddings.py [--rows 1000000] [--width 128] [--k 256] [--repeats 2]
       [--rounds 2 6] [--workdir /tmp/shardmeans-bench]
Needs `pip install faiss-cpu` (not a dependency of shardmeans).

The data: ROWS unit-ish float32 embeddings around K directions, in 8 Parquet shards
as one `list<float>` column `emb` (what an embedding table holds). Every side starts
from the same K unit centroids and runs a fixed number of rounds (tol 0), float32:
  - shardmeans: `fit --features emb --standardize none --distance cosine --init C.npy`
    (a subprocess: reading, validating, the transform, the rounds, the assignments);
  - FAISS: `faiss.Kmeans(spherical=True)` on the rows divided by their norms, in memory
    (max_points_per_centroid raised so that it trains on every row, not a subsample);
  - scikit-learn: `KMeans(init=C, algorithm="lloyd")` on the same normalized rows (the
    usual stand-in: Euclidean on unit rows, its centroids not renormalized).
Each side runs with R1 and R2 rounds, alternated, `repeats` times; the marginal cost of
a round is (t(R2) - t(R1)) / (R2 - R1) (the peers' time is their training call; ours is
the whole command, whose fixed cost cancels in the difference). Prints medians and the
ratios of shardmeans' cost per round to each peer's.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
SHARDS = 8


def write_data(directory: str, rows: int, width: int, k: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(k, width))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    per_shard = -(-rows // SHARDS)
    for s in range(SHARDS):
        n = min(per_shard, rows - s * per_shard)
        x = directions[rng.integers(0, k, n)] + rng.normal(0, 0.3 / np.sqrt(width), (n, width))
        offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
        emb = pa.ListArray.from_arrays(offsets, pa.array(x.astype(np.float32).reshape(-1)))
        ids = np.arange(s * per_shard, s * per_shard + n)
        pq.write_table(pa.table({"id": ids, "emb": emb}), f"{directory}/part-{s:02d}.parquet")


def load_unit_rows(pattern: str) -> np.ndarray:
    import glob

    import pyarrow.parquet as pq

    parts = []
    for path in sorted(glob.glob(pattern)):
        column = pq.read_table(path, columns=["emb"]).column("emb").combine_chunks()
        width = len(column[0])
        parts.append(column.flatten().to_numpy().reshape(-1, width))
    x = np.concatenate(parts).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def peer(kind: str, pattern: str, init_path: str, rounds: int) -> None:
    """Run one peer in this process; print {"seconds", "objective"} (training call only)."""
    x = load_unit_rows(pattern)
    init = np.load(init_path).astype(np.float32)
    k, d = init.shape
    start = time.perf_counter()
    if kind == "faiss":
        import faiss

        km = faiss.Kmeans(
            d, k, niter=rounds, spherical=True, max_points_per_centroid=len(x), verbose=False
        )
        km.train(x, init_centroids=init)
        objective = float(km.obj[-1]) if len(km.obj) else float("nan")  # sum of cos
    else:
        from sklearn.cluster import KMeans

        km = KMeans(k, init=init, n_init=1, max_iter=rounds, tol=0, algorithm="lloyd").fit(x)
        objective = float(km.inertia_)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "objective": objective}))


def run(cmd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc.stdout


def time_shardmeans(pattern, init, k, rounds, out):
    seconds, _ = run(
        [sys.executable, "-m", "pipeline", "fit", "--input", pattern, "--output", out]
        + ["--features", "emb", "--id_column", "id", "--k", str(k), "--overwrite"]
        + ["--standardize", "none", "--distance", "cosine", "--init", init]
        + ["--tol", "0", "--max_rounds", str(rounds)]
    )
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    if m["rounds"] != rounds:
        print(f"  note: shardmeans stopped after {m['rounds']} of {rounds} rounds (converged)")
    return seconds


def time_peer(kind, pattern, init, rounds):
    _, stdout = run(
        [sys.executable, __file__, "--peer", kind, "--input", pattern, "--init", init]
        + ["--rounds", str(rounds)]
    )
    return json.loads(stdout.strip().splitlines()[-1])["seconds"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, nargs="+", default=[2, 6])
    parser.add_argument("--workdir", default="/tmp/shardmeans-bench")
    parser.add_argument("--peer", choices=["faiss", "sklearn"])
    parser.add_argument("--input")
    parser.add_argument("--init")
    args = parser.parse_args()
    if args.peer:
        peer(args.peer, args.input, args.init, args.rounds[0])
        return
    data_dir = os.path.join(args.workdir, f"emb-{args.rows}x{args.width}")
    pattern = os.path.join(data_dir, "*.parquet")
    if not os.path.isdir(data_dir):
        write_data(data_dir, args.rows, args.width, args.k)
    init = os.path.join(args.workdir, f"emb-init-{args.k}x{args.width}.npy")
    rng = np.random.default_rng(1)
    c = rng.normal(size=(args.k, args.width))
    np.save(init, (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32))
    out = os.path.join(args.workdir, "emb-out")
    r1, r2 = args.rounds
    sides = {
        "shardmeans": lambda r: time_shardmeans(pattern, init, args.k, r, out),
        "faiss": lambda r: time_peer("faiss", pattern, init, r),
        "sklearn": lambda r: time_peer("sklearn", pattern, init, r),
    }
    times = {(side, r): [] for side in sides for r in (r1, r2)}
    for side in sides:  # untimed: the page cache, the op's build
        sides[side](r1)
    for _ in range(args.repeats):
        for side, fn in sides.items():
            for r in (r1, r2):
                times[side, r].append(fn(r))
    print(f"{args.rows} x {args.width}, K={args.k}, cosine, rounds {r1} and {r2}, float32")
    per_round = {}
    for side in sides:
        t1, t2 = statistics.median(times[side, r1]), statistics.median(times[side, r2])
        per_round[side] = (t2 - t1) / (r2 - r1)
        spread = max(times[side, r2]) - min(times[side, r2])
        print(
            f"  {side:10s} t({r1})={t1:7.2f}s t({r2})={t2:7.2f}s per round "
            f"{per_round[side]:.3f}s (spread of t({r2}) {spread:.2f}s)"
        )
    for peer_name in ("faiss", "sklearn"):
        ratio = per_round["shardmeans"] / per_round[peer_name]
        print(f"  per round, shardmeans / {peer_name}: {ratio:.2f}")


if __name__ == "__main__":
    main()
