"""The in-memory peer of `shardmeans fit`: read Parquet, StandardScaler, KMeans, write labels.

Usage: python bench/sklearn_job.py --input GLOB --output DIR --k K [--init PATH.npy]
       [--max_iter N] [--tol X] [--dtype input|float64]
       (no --init: scikit-learn's defaults, k-means++ over all rows)
--dtype input (the default) computes at the input's precision, as shardmeans' step
does on float32 input: StandardScaler and KMeans keep float32 data float32.
Prints one JSON line: inertia, n_iter, seconds, dtype.
"""

import argparse
import glob
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--init")
    parser.add_argument("--max_iter", type=int, default=300)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["input", "float64"], default="input")
    args = parser.parse_args()
    start = time.perf_counter()
    table = pa.concat_tables(pq.read_table(f) for f in sorted(glob.glob(args.input)))
    names = [n for n in table.schema.names if n.startswith("f")]
    x = np.column_stack([table.column(n).to_numpy() for n in names])
    if args.dtype == "float64":
        x = x.astype(np.float64)
    z = StandardScaler().fit_transform(x)
    if args.init:
        km = KMeans(
            args.k,
            init=np.load(args.init).astype(z.dtype),
            n_init=1,
            max_iter=args.max_iter,
            tol=args.tol,
            algorithm="lloyd",
        )
    else:
        km = KMeans(args.k, random_state=args.seed)
    km.fit(z)
    os.makedirs(args.output, exist_ok=True)
    pq.write_table(
        pa.table({"id": table.column("id"), "cluster_id": km.labels_}),
        os.path.join(args.output, "labels.parquet"),
    )
    print(
        json.dumps(
            {
                "inertia": float(km.inertia_),
                "n_iter": int(km.n_iter_),
                "seconds": time.perf_counter() - start,
                "dtype": str(z.dtype),
            }
        )
    )


if __name__ == "__main__":
    main()
