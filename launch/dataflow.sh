#!/usr/bin/env bash
# Submits a shardmeans command (`fit` by default, `score`, ...) to Google Cloud Dataflow
# (--runner=DataflowRunner), with
# temp and staging files under gs://BUCKET/shardmeans/. On CPU workers the package
# is shipped with --setup_file (each worker pip-installs it and its pinned stack at
# start-up); with --image, or --gpu, the workers run the worker container
# (launch/Dockerfile), which already holds everything.
#
# Usage: launch/dataflow.sh [COMMAND] PROJECT REGION BUCKET [--gpu TYPE:COUNT] [--image IMAGE]
#                           --input gs://... --output gs://... [its flags]
#   e.g. launch/dataflow.sh my-project us-central1 my-bucket --input ... --k 8   (fit)
#        launch/dataflow.sh score my-project us-central1 my-bucket --model gs://... ...
#   COMMAND      the shardmeans command to run: fit (the default), score, or any other
#                command of `shardmeans --help`; its flags follow
#   PROJECT           Google Cloud project that runs the job
#   REGION            Dataflow region, e.g. us-central1
#   BUCKET            Cloud Storage bucket (name only) for temp and staging files
#   --gpu TYPE:COUNT  COUNT GPUs of TYPE (e.g. nvidia-tesla-t4:1, nvidia-l4:1) on every
#                     worker VM, one SDK process per VM, --devices auto
#   --image IMAGE     worker container (default with --gpu:
#                     REGION-docker.pkg.dev/PROJECT/shardmeans/worker:TAG, TAG made of the
#                     versions pinned in setup.py; built from launch/Dockerfile, see
#                     docs/runners.md, "Google Cloud Dataflow")
# Flags after these go to the command and Beam, and win over the ones set here
# (e.g. --machine_type, --max_num_workers, --temp_location).
#
# Environment:
#   SHARDMEANS_PYTHON   interpreter that has shardmeans installed (default: .venv/bin/python
#                       of this repository, as `make install` creates it, else the one
#                       of `shardmeans` on PATH)
#   SHARDMEANS_DRY_RUN  1: print the command instead of running it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
USAGE="usage: launch/dataflow.sh [COMMAND] PROJECT REGION BUCKET [--gpu TYPE:COUNT] [--image IMAGE] --input gs://... --output gs://... [the command's or Beam flags]"

source "$ROOT/launch/common.bash"
split_command 3 "$@"
shift "$SHIFT"

if [[ $# -lt 3 || "$1" == -* || "$2" == -* || "$3" == -* ]]; then
  echo "$USAGE" >&2
  [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && exit 0
  exit 2
fi
project="$1" region="$2" bucket="${3#gs://}"
bucket="${bucket%/}"
shift 3

gpu="" image="" rest=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpu) [[ $# -ge 2 ]] || die "--gpu needs TYPE:COUNT"; gpu="$2"; shift 2 ;;
    --gpu=*) gpu="${1#--gpu=}"; shift ;;
    --image) [[ $# -ge 2 ]] || die "--image needs IMAGE"; image="$2"; shift 2 ;;
    --image=*) image="${1#--image=}"; shift ;;
    *) rest+=("$1"); shift ;;
  esac
done

PYTHON="$(find_python)"
beam_flags=(
  --runner=DataflowRunner
  "--project=$project"
  "--region=$region"
  "--temp_location=gs://$bucket/shardmeans/temp"
  "--staging_location=gs://$bucket/shardmeans/staging"
)

if [[ -n "$gpu" ]]; then
  [[ "$gpu" =~ ^([a-z0-9-]+):([1-9][0-9]*)$ ]] \
    || die "--gpu takes TYPE:COUNT, e.g. nvidia-tesla-t4:1 (got '$gpu')"
  gpu_type="${BASH_REMATCH[1]}" gpu_count="${BASH_REMATCH[2]}"
  if [[ -z "$image" ]]; then
    tag="beam$(pinned BEAM_VERSION)-tf$(pinned TENSORFLOW_VERSION)-tft$(pinned TFT_VERSION)"
    image="$region-docker.pkg.dev/$project/shardmeans/worker:$tag"
  fi
  beam_flags+=(
    # Dataflow attaches the GPUs and installs the NVIDIA driver on every worker VM.
    "--dataflow_service_options=worker_accelerator=type:$gpu_type;count:$gpu_count;install-nvidia-driver"
    # One SDK process per VM instead of one per vCPU: every process would otherwise
    # build its own MirroredStrategy over the same GPUs (and each reserve their
    # memory); with one process the strategy owns all of the VM's GPUs and splits
    # each batch across them, and Beam still runs bundles in that process's threads.
    --experiments=no_use_multiple_sdk_containers
    # The strategy's devices: all the GPUs the worker sees.
    --devices auto
  )
fi

if [[ -n "$image" ]]; then
  # The container already holds shardmeans and the pinned stack: no --setup_file.
  beam_flags+=("--sdk_container_image=$image")
  # Dataflow starts the container's Python: the job must be built by the same minor version.
  image_python="$(sed -n 's/^ARG PYTHON_VERSION=\(.*\)$/\1/p' "$ROOT/launch/Dockerfile")"
  local_python="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [[ -n "$image_python" && "$image_python" != "$local_python" ]]; then
    echo "launch/dataflow.sh: warning: submitting from Python $local_python; launch/Dockerfile" \
         "builds Python $image_python workers (they must match)" >&2
  fi
else
  # The workers pip-install this package (and its pinned dependencies) from an sdist.
  beam_flags+=("--setup_file=$ROOT/setup.py")
fi

run_or_print "$PYTHON" -m pipeline "$COMMAND" "${beam_flags[@]}" "${rest[@]}"
