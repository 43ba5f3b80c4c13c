#!/usr/bin/env bash
# Scale run: `shardmeans fit` (defaults, K=64) on 1M, 4M and 10M rows x 32 features,
# with wall time and peak RSS of the whole process tree's largest process (GNU time -v).
# Usage: bench/scale.sh [ROWS...]   (default: 1000000 4000000 10000000)
#   WORKDIR=/tmp/shardmeans-bench  where the data and outputs go
#   PY=.venv/bin/python            the Python to run (another venv, e.g. from a git worktree)
#   FIT_ARGS="--max_rounds 5 --tol 0"  extra fit flags, e.g. a fixed number of rounds to
#                                  check that time grows linearly with the rows
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for this command only (see bench/README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
WORKDIR="${WORKDIR:-/tmp/shardmeans-bench}"
[[ -x /usr/bin/time ]] || { echo "bench/scale.sh needs GNU time: apt-get install time" >&2; exit 2; }
rows_list=("$@")
[[ ${#rows_list[@]} -gt 0 ]] || rows_list=(1000000 4000000 10000000)
printf '%-10s %10s %12s %8s\n' rows wall_s peak_rss_mb rounds
for rows in "${rows_list[@]}"; do
  data="$WORKDIR/data-${rows}x32"
  [[ -d "$data" ]] || $PY -m pipeline generate --output "$data" --rows "$rows" --features 32 \
    --clusters 64 --shards $(( rows / 500000 > 4 ? rows / 500000 : 4 )) > /dev/null
  log="$WORKDIR/scale-$rows.time"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE TF_CPP_MIN_LOG_LEVEL=3 /usr/bin/time -v \
    $PY -m pipeline fit --input "$data/*.parquet" --output "$WORKDIR/scale-out-$rows" --k 64 \
    --id_column id --overwrite ${FIT_ARGS:-} > "$WORKDIR/scale-$rows.out" 2> "$log"
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log")
  rounds=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['rounds'])" "$WORKDIR/scale-out-$rows/metrics.json")
  printf '%-10s %10s %12s %8s\n' "$rows" "$wall" "$rss" "$rounds"
done
