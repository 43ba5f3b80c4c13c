"""The fixed cost of a short job: shardmeans' start-up and a small fit against scikit-learn's.

Usage: python bench/fixed_cost.py [--rows 200000] [--features 8] [--k 6] [--repeats 5]
       [--fit_repeats 3] [--dtype float32] [--repo DIR] [--workdir /tmp/shardmeans-bench]

Every command runs as a subprocess of this interpreter (the project's .venv), from
`--repo` (default: this checkout): `python -m pipeline` imports the `pipeline` and
`transforms` packages of the directory it runs in, so `--repo` measures another
checkout's code (an older commit, extracted with `git archive`) on the same
installed stack. Pairs, each run alternately A B A B, medians and their ratio:

  - `shardmeans --help` against `python -c "import sklearn.cluster"`;
  - `shardmeans fit --help` and `shardmeans generate --help` against the same;
  - a fit's time to its first log line on stderr (what a user waits with nothing
    on the console) against the same import;
  - the demo's fit end to end (`make demo`'s flags: 200k x 8, K=6, the defaults)
    against bench/sklearn_job.py on the same Parquet files (read, StandardScaler,
    KMeans with its defaults, write the labels). The files are float32 by default
    (`--dtype`), so scikit-learn computes at the precision shardmeans' step does;
    `make demo`'s own data are float64.

`python -c pass` is printed as the floor of any Python process. OPENBLAS_CORETYPE
and OPENBLAS_L2_SIZE are unset for every command (bench/README.md).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from side_by_side import ENV, ROOT, blas_info, run, step_kind


def timed(cmd, cwd):
    """Wall seconds of `cmd` run to its end; stops this script if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return seconds


def first_line_and_end(cmd, cwd):
    """(seconds to the first line on stderr, seconds to the end) of `cmd`."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = None
    tail = []
    for line in proc.stderr:
        if first is None:
            first = time.perf_counter() - start
        tail = (tail + [line])[-40:]
    if proc.wait():
        sys.exit(f"failed: {' '.join(cmd)}\n{''.join(tail)}")
    return first, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit_repeats", type=int, default=3)
    parser.add_argument("--repo", default=ROOT)
    parser.add_argument("--workdir", default="/tmp/shardmeans-bench")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    repo = os.path.abspath(args.repo)
    py = sys.executable
    data_dir = os.path.join(
        args.workdir, f"demo-{args.rows}x{args.features}-c{args.k}-{args.dtype}"
    )
    data = os.path.join(data_dir, "*.parquet")
    if not os.path.isdir(data_dir):
        run(
            [
                py,
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
                str(args.k),
                "--format",
                "parquet",
                "--dtype",
                args.dtype,
            ]
        )
    out = os.path.join(args.workdir, "fixed-cost-out")
    fit = [py, "-m", "pipeline", "fit", "--input", data, "--output", out + "-sm"]
    fit += ["--k", str(args.k), "--id_column", "id", "--overwrite"]
    sk_fit = [py, os.path.join(ROOT, "bench", "sklearn_job.py"), "--input", data]
    sk_fit += ["--output", out + "-sk", "--k", str(args.k)]
    sk_import = [py, "-c", "import sklearn.cluster"]
    quick = {
        "python -c pass": [py, "-c", "pass"],
        "shardmeans --help": [py, "-m", "pipeline", "--help"],
        "shardmeans fit --help": [py, "-m", "pipeline", "fit", "--help"],
        "shardmeans generate --help": [py, "-m", "pipeline", "generate", "--help"],
    }
    print(f"BLAS (both sides): {blas_info()}")
    print(f"shardmeans step: {step_kind()}")
    print(f"code: {repo}; data: {args.rows} rows x {args.features} features, K={args.k}")

    times = {name: [] for name in [*quick, "import sklearn.cluster", "sklearn fit"]}
    times.update({"fit, first log line": [], "fit, end to end": []})
    # Untimed: the page cache, and the op's build (step_kind above) before any timed fit.
    timed(fit, repo)
    timed(sk_fit, repo)
    for _ in range(args.repeats):
        for name, cmd in quick.items():
            times[name].append(timed(cmd, repo))
            times["import sklearn.cluster"].append(timed(sk_import, repo))
    for _ in range(args.fit_repeats):
        first, end = first_line_and_end(fit, repo)
        times["fit, first log line"].append(first)
        times["fit, end to end"].append(end)
        times["sklearn fit"].append(timed(sk_fit, repo))

    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{'measure':<30}{'shardmeans':>12}{'scikit-learn':>14}{'ratio':>8}")
    peer = med["import sklearn.cluster"]
    print(f"{'python -c pass (floor)':<30}{med['python -c pass']:>12.2f}")
    for name in ("shardmeans --help", "shardmeans fit --help", "shardmeans generate --help"):
        print(f"{name:<30}{med[name]:>12.2f}{peer:>14.2f}{med[name] / peer:>8.2f}")
    first = med["fit, first log line"]
    print(f"{'fit, first log line':<30}{first:>12.2f}{peer:>14.2f}{first / peer:>8.2f}")
    end, sk = med["fit, end to end"], med["sklearn fit"]
    print(f"{'fit, end to end':<30}{end:>12.2f}{sk:>14.2f}{end / sk:>8.2f}")
    print("raw:", {name: [round(t, 3) for t in v] for name, v in times.items()})


if __name__ == "__main__":
    main()
