#!/usr/bin/env bash
# Submits a shardmeans command (`fit` by default, `score`, ...) to an Apache Flink
# cluster with Beam's FlinkRunner.
#
# What must already be running / installed:
#   - a Flink cluster of a version the pinned Beam supports (the choices of Beam's
#     --flink_version; print them with: python -c "from apache_beam.options.pipeline_options
#     import FlinkRunnerOptions as F; print(F.PUBLISHED_FLINK_VERSIONS)"), passing
#     --flink_version=X.Y when the cluster's is not the newest of them; its job
#     manager's REST endpoint HOST:PORT (default port 8081) reachable from here;
#   - on this machine: Java 11+ and access to Maven Central, from which Beam fetches
#     the Flink job server jar at submission (or --flink_job_server_jar=PATH to a local
#     copy of beam-runners-flink-X.Y-job-server-BEAM_VERSION.jar);
#   - input, output and --temp_location on storage every task manager can read and
#     write (gs://, s3://, hdfs://, or a shared mount): the SDK workers run there;
#   - for the SDK workers, by --environment:
#       DOCKER (default)  Docker on every task manager, able to pull IMAGE (the worker
#                         container, launch/Dockerfile; push it to a registry they reach);
#       EXTERNAL          an SDK worker pool reachable from every task manager, e.g. a
#                         sidecar container on each task manager:
#                           docker run -d --network=host IMAGE --worker_pool
#                         (listens on localhost:50000, the default --worker_pool);
#       PROCESS           shardmeans and its pinned stack installed on every task
#                         manager, and Beam's SDK boot executable at --process_command
#                         (default /opt/apache/beam/boot, as in the SDK image).
#
# Usage: launch/flink.sh [COMMAND] --flink_master HOST:PORT [--environment DOCKER|EXTERNAL|PROCESS]
#                        [--image IMAGE] [--worker_pool HOST:PORT] [--process_command CMD]
#                        [--parallelism N] [--sdk_workers N]
#                        --input URL --output URL [its flags]
#   COMMAND                   the shardmeans command to run: fit (the default), score,
#                             or any other command of `shardmeans --help`
#   --flink_master HOST:PORT  the job manager's REST endpoint
#   --environment TYPE        how task managers start SDK workers (see above)
#   --image IMAGE             DOCKER: the worker container (default
#                             shardmeans-worker:TAG, TAG made of setup.py's pins)
#   --worker_pool HOST:PORT   EXTERNAL: the worker pool, as a task manager sees it
#   --process_command CMD     PROCESS: the SDK boot executable on the task managers
#   --parallelism N           Flink parallelism of the job (default: the cluster's)
#   --sdk_workers N           SDK processes per task manager (default 1, so that each
#                             process's MirroredStrategy owns all of the machine's GPUs;
#                             0 lets the runner choose)
# Flags after these go to the command and Beam, and win over the ones set here.
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
flink_master="" environment=DOCKER image="" worker_pool=localhost:50000
process_command=/opt/apache/beam/boot parallelism="" sdk_workers=1 rest=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --flink_master|--environment|--image|--worker_pool|--process_command|--parallelism|--sdk_workers)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      printf -v "${1#--}" '%s' "$2"; shift 2 ;;
    --flink_master=*|--environment=*|--image=*|--worker_pool=*|--process_command=*|--parallelism=*|--sdk_workers=*)
      name="${1%%=*}"
      printf -v "${name#--}" '%s' "${1#*=}"; shift ;;
    *) rest+=("$1"); shift ;;
  esac
done
[[ -n "$flink_master" ]] || die "--flink_master HOST:PORT is required (the Flink job manager's REST endpoint)"
[[ -z "$parallelism" || "$parallelism" =~ ^[1-9][0-9]*$ ]] || die "--parallelism takes a positive integer"
[[ "$sdk_workers" =~ ^[0-9]+$ ]] || die "--sdk_workers takes a non-negative integer"

beam_flags=(--runner=FlinkRunner "--flink_master=$flink_master" --environment_type="${environment^^}")
# (--environment_config for EXTERNAL: Beam's external_service_address environment option
# alone fails in ExternalEnvironment.from_options.)
case "${environment^^}" in
  DOCKER)
    if [[ -z "$image" ]]; then
      image="shardmeans-worker:beam$(pinned BEAM_VERSION)-tf$(pinned TENSORFLOW_VERSION)-tft$(pinned TFT_VERSION)"
    fi
    beam_flags+=("--environment_config=$image") ;;
  EXTERNAL)
    beam_flags+=("--environment_config=$worker_pool") ;;
  PROCESS)
    beam_flags+=("--environment_options=process_command=$process_command") ;;
  *) die "--environment must be DOCKER, EXTERNAL or PROCESS (got '$environment')" ;;
esac
beam_flags+=("--sdk_worker_parallelism=$sdk_workers")
[[ -z "$parallelism" ]] || beam_flags+=("--parallelism=$parallelism")

PYTHON="$(find_python)"
run_or_print "$PYTHON" -m pipeline "$COMMAND" "${beam_flags[@]}" "${rest[@]}"
