#!/usr/bin/env bash
# Runs a shardmeans command (`fit` by default, `score`, ...) on Beam's portable runner
# on this machine: starts a local
# Beam job service and an external SDK worker pool (each its own background
# process on a free localhost port), submits the job with
# --runner=PortableRunner --environment_type=EXTERNAL, and stops both at exit.
# The same Fn API protocol as Flink, Spark or Dataflow Runner v2, without a cluster.
#
# Usage: launch/portable.sh [COMMAND] --input GLOB --output DIR [its flags]
#   e.g. launch/portable.sh --input 'in/*.csv' --output out --k 8        (fit)
#        launch/portable.sh score --model out --input 'new/*.csv' --output scored
#   COMMAND      the shardmeans command to run: fit (the default), score, or any other
#                command of `shardmeans --help`; its flags follow
#   (the script sets --runner, --job_endpoint, --environment_type, --environment_config)
#
# Environment:
#   SHARDMEANS_PYTHON           interpreter that has shardmeans installed (default:
#                               .venv/bin/python of this repository, else the one of
#                               `shardmeans` on PATH); the job service, the worker pool,
#                               the SDK workers and the job itself all run on it
#   SHARDMEANS_STARTUP_TIMEOUT  seconds to wait for both services to listen (default 120)
#   SHARDMEANS_KEEP_LOGS        1: keep the services' logs even when the job succeeds
#                               (they are kept, and their directory printed, when it fails)
#
# Relative paths work: the workers run in the current directory, on this filesystem.
# shellcheck disable=SC2317  # stop() and cleanup() run from the EXIT trap
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

source "$ROOT/launch/common.bash"
split_command 0 "$@"
shift "$SHIFT"
# The services stop when the job's command returns: a detached job would die with them.
for arg in "$@"; do
  [[ "$arg" != --detach ]] || die "--detach: this script stops its job service when the \
command returns, which would end the job; start the services by hand (docs/runners.md, \"The \
portable runner, on this machine\") to detach from a job"
done
PYTHON="$(find_python)"

work="$(mktemp -d "${TMPDIR:-/tmp}/shardmeans-portable.XXXXXX")"
job_pid=""
pool_pid=""
status=1

# shellcheck disable=SC2329  # called by cleanup, which the EXIT trap runs
stop() {  # stop a service's whole process group (the worker pool's SDK workers too)
  local pid="$1"
  [[ -n "$pid" ]] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 -- "-$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}

# shellcheck disable=SC2329  # run by the EXIT trap
cleanup() {
  stop "$pool_pid"
  stop "$job_pid"
  if [[ -z "$job_pid" || ("$status" == 0 && "${SHARDMEANS_KEEP_LOGS:-0}" != 1) ]]; then
    rm -rf "$work"
  else
    echo "launch/portable.sh: service logs kept in $work" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The worker pool starts each SDK worker as a bare `python -c ...`, found on PATH.
# Put a `python` that is exactly $PYTHON first on PATH (a wrapper, so that a venv
# stays a venv), then check that the name resolves to it and can import the job.
mkdir -p "$work/bin"
printf '#!/bin/sh\nexec %q "$@"\n' "$PYTHON" > "$work/bin/python"
chmod +x "$work/bin/python"
export PATH="$work/bin:$PATH"
want_prefix="$("$PYTHON" -c 'import sys; print(sys.prefix)' 2>/dev/null)" \
  || die "$PYTHON does not run"
got_prefix="$(python -c 'import sys; print(sys.prefix)')"
[[ "$got_prefix" == "$want_prefix" ]] \
  || die "\`python\` on PATH runs $got_prefix, not $PYTHON ($want_prefix)"
python -c 'import importlib.util as u, pipeline, transforms, apache_beam
assert u.find_spec("tensorflow_transform"), "No module named tensorflow_transform"' \
  2>"$work/import.log" \
  || die "\`python\` ($PYTHON) cannot import the job: $(tail -n 1 "$work/import.log")
set SHARDMEANS_PYTHON to the interpreter that has shardmeans installed (e.g. .venv/bin/python)"

# Two distinct free localhost ports (both sockets held open while choosing).
read -r job_port pool_port < <(python -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("localhost", 0)); b.bind(("localhost", 0))
print(a.getsockname()[1], b.getsockname()[1])')

# SDK workers import TensorFlow without the CLI: skip Keras 3 as the CLI does (pipeline/cli.py).
export TF_USE_LEGACY_KERAS="${TF_USE_LEGACY_KERAS:-1}"
# Each service in its own process group (job control on), so that stop() ends its children.
set -m
python -m apache_beam.runners.portability.local_job_service_main --port "$job_port" \
  > "$work/job_service.log" 2>&1 &
job_pid=$!
python -m apache_beam.runners.worker.worker_pool_main --service_port "$pool_port" \
  > "$work/worker_pool.log" 2>&1 &
pool_pid=$!
set +m

wait_for_port() {  # name port pid log
  local deadline=$((SECONDS + ${SHARDMEANS_STARTUP_TIMEOUT:-120}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; do
    if ! kill -0 "$3" 2>/dev/null; then
      tail -n 20 "$4" >&2
      die "the $1 exited before listening on port $2 (log: $4)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$4" >&2
      die "the $1 is not listening on localhost:$2 after ${SHARDMEANS_STARTUP_TIMEOUT:-120}s (log: $4)"
    fi
    sleep 0.2
  done
}
wait_for_port "job service" "$job_port" "$job_pid" "$work/job_service.log"
wait_for_port "worker pool" "$pool_port" "$pool_pid" "$work/worker_pool.log"
echo "launch/portable.sh: job service on localhost:$job_port, worker pool on localhost:$pool_port" >&2

set +e
python -m pipeline "$COMMAND" "$@" \
  --runner=PortableRunner \
  "--job_endpoint=localhost:$job_port" \
  --environment_type=EXTERNAL \
  "--environment_config=localhost:$pool_port"
status=$?
set -e
exit "$status"
