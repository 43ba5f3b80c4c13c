#!/usr/bin/env bash
# Runs `shardmeans fit` on the local DirectRunner (what `make demo` uses).
# Usage: launch/local.sh [--workers N] --input GLOB --output DIR --k K [any fit or Beam flag]
#   --workers N  run N worker processes (--direct_running_mode=multi_processing)
set -euo pipefail
beam_flags=(--runner=DirectRunner)
if [[ "${1:-}" == "--workers" ]]; then
  beam_flags+=(--direct_running_mode=multi_processing "--direct_num_workers=$2")
  shift 2
fi
exec shardmeans fit "${beam_flags[@]}" "$@"
