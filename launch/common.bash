# Shared by the launch scripts (sourced, not run): error exit, versions, the interpreter, dry runs.
# Usage: ROOT=<repo root>; source "$ROOT/launch/common.bash"

die() { echo "launch/$(basename "$0"): $*" >&2; exit 2; }

# A version pinned in setup.py (the one place the versions are stated).
pinned() {
  local value
  value="$(sed -n "s/^$1 = \"\([^\"]*\)\"$/\1/p" "$ROOT/setup.py")"
  [[ -n "$value" ]] || die "no $1 in $ROOT/setup.py"
  echo "$value"
}

# The interpreter that has shardmeans installed: $SHARDMEANS_PYTHON, else the venv of this
# checkout (`make install` and `make demo` create $ROOT/.venv, and put nothing on PATH),
# else the one of `shardmeans` on PATH (an installed package, an activated venv).
find_python() {
  if [[ -n "${SHARDMEANS_PYTHON:-}" ]]; then
    echo "$SHARDMEANS_PYTHON"; return
  fi
  if [[ -x "$ROOT/.venv/bin/python" && -x "$ROOT/.venv/bin/shardmeans" ]]; then
    echo "$ROOT/.venv/bin/python"; return
  fi
  local script line
  if script="$(command -v shardmeans 2>/dev/null)"; then
    IFS= read -r line < "$script" || true
    if [[ "$line" == '#!'*python* && -x "${line#\#!}" ]]; then
      echo "${line#\#!}"; return
    fi
  fi
  die "cannot find the Python that has shardmeans installed: run make install (it creates $ROOT/.venv), or set SHARDMEANS_PYTHON"
}

# Run the command given as arguments, or only print it when SHARDMEANS_DRY_RUN=1.
run_or_print() {
  if [[ "${SHARDMEANS_DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "$@"
    echo
    exit 0
  fi
  exec "$@"
}

# The shardmeans command a launcher runs: its first argument when that is a word (fit,
# score, or any other command `shardmeans --help` lists: the launchers keep no list
# of them), else fit, so that `launch/X.sh --input ...` still fits. A launcher whose
# own arguments begin with NAMES words (dataflow.sh: PROJECT REGION BUCKET) passes
# that count: a command is then given only when one more word comes before them.
# Usage: split_command NAMES "$@"; shift "$SHIFT"   (sets COMMAND and SHIFT, 0 or 1)
# shellcheck disable=SC2034  # COMMAND and SHIFT are read by the launcher that sources this
split_command() {
  local names="$1" i
  shift
  COMMAND=fit SHIFT=0
  for ((i = 1; i <= names + 1; i++)); do
    [[ $i -le $# && "${!i}" != -* ]] || return 0
  done
  [[ "$1" =~ ^[a-z][a-z0-9_]*$ ]] \
    || die "'$1' is not a shardmeans command (fit, score, ...; see shardmeans --help)"
  COMMAND="$1" SHIFT=1
}
