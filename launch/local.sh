#!/usr/bin/env bash
# Runs `shardmeans fit` on the local DirectRunner (what `make demo` uses).
# Usage: launch/local.sh [--workers N] --input GLOB --output DIR --k K [any fit or Beam flag]
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

beam_flags=(--runner=DirectRunner)
if [[ "${1:-}" == "--workers" ]]; then
  [[ $# -ge 2 ]] || die "--workers needs a number"
  beam_flags+=(--direct_running_mode=multi_processing "--direct_num_workers=$2")
  shift 2
fi
PYTHON="$(find_python)"
run_or_print "$PYTHON" -m pipeline fit "${beam_flags[@]}" "$@"
