#!/usr/bin/env bash
# Runs a shardmeans command (`fit` by default, `score`, ...) on the local DirectRunner
# (what `make demo` uses).
# Usage: launch/local.sh [COMMAND] [--workers N] --input GLOB --output DIR [its flags]
#   e.g. launch/local.sh --input 'in/*.csv' --output out --k 8        (fit)
#        launch/local.sh score --model out --input 'new/*.csv' --output scored
#   COMMAND      the shardmeans command to run: fit (the default), score, or any other
#                command of `shardmeans --help`; its flags follow
#   --workers N  run N worker processes (--direct_running_mode=multi_processing)
#
# Environment:
#   SHARDMEANS_PYTHON   interpreter that has shardmeans installed (default: .venv/bin/python
#                       of this repository, as `make install` creates it, else the one
#                       of `shardmeans` on PATH)
#   SHARDMEANS_DRY_RUN  1: print the command instead of running it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/common.bash"

split_command 0 "$@"
shift "$SHIFT"
beam_flags=(--runner=DirectRunner)
if [[ "${1:-}" == "--workers" ]]; then
  [[ $# -ge 2 ]] || die "--workers needs a number"
  beam_flags+=(--direct_running_mode=multi_processing "--direct_num_workers=$2")
  shift 2
fi
PYTHON="$(find_python)"
run_or_print "$PYTHON" -m pipeline "$COMMAND" "${beam_flags[@]}" "$@"
