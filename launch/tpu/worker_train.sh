#!/usr/bin/env bash
# Runs on one TPU VM worker, started there by train.sh over ssh: starts training detached from
# the ssh session (setsid + nohup) so the ssh call returns, appending output to LOG_DIR/train.log.
set -euo pipefail

PYTHON=${PYTHON:-python3}
STOP_TIMEOUT=${STOP_TIMEOUT:-300}
workdir=""
config=configs/released.py
log_dir=$HOME/diff2lip-logs
restart=0
env_vars=()

usage() {
  cat <<USAGE
Usage: ${0##*/} --workdir DIR [--config FILE] [--log_dir DIR] [--env KEY=VALUE]... [--restart]
                [-- train flags]

Starts '$PYTHON -m diff2lip_jax.train --config FILE --workdir DIR [train flags]' in the
background on this worker with DIFF2LIP_DISTRIBUTED=1. Refuses if a training started by this
script is still running here, unless --restart (which stops it first: SIGTERM, which makes
training save a checkpoint, then SIGKILL after STOP_TIMEOUT seconds, default 300).
Output goes to LOG_DIR/train.log, the pid to LOG_DIR/train.pid. -h, --help: this text.
USAGE
}

die() {
  printf '%s on %s: %s\n' "${0##*/}" "$(hostname)" "$*" >&2
  exit 2
}

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --workdir) workdir=${2:?"--workdir needs a value"}; shift 2 ;;
    --config) config=${2:?"--config needs a value"}; shift 2 ;;
    --log_dir) log_dir=${2:?"--log_dir needs a value"}; shift 2 ;;
    --env) env_vars+=("${2:?"--env needs KEY=VALUE"}"); shift 2 ;;
    --restart) restart=1; shift ;;
    --) shift; break ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
[[ -n $workdir ]] || die "--workdir is required"

log_dir=$(mkdir -p "$log_dir" && cd "$log_dir" && pwd)
pid_file=$log_dir/train.pid
log_file=$log_dir/train.log

# True if pid $1 is alive and is our training (not a recycled pid of something else).
is_training() {
  [[ -r /proc/$1/cmdline ]] && grep -qa diff2lip_jax.train "/proc/$1/cmdline"
}

if [[ -f $pid_file ]]; then
  old_pid=$(<"$pid_file")
  if is_training "$old_pid"; then
    ((restart)) || die "training is already running (pid $old_pid); pass --restart to replace it"
    # SIGTERM lets training save a checkpoint; then whatever is left of its process group
    # (setsid made it the leader; data loader workers are members) is killed.
    echo "$(hostname): stopping training (pid $old_pid), up to ${STOP_TIMEOUT}s"
    kill -TERM "$old_pid" 2>/dev/null || true
    for _ in $(seq "$STOP_TIMEOUT"); do
      is_training "$old_pid" || break
      sleep 1
    done
    kill -KILL -- "-$old_pid" 2>/dev/null || true
  fi
fi

cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # repository root: configs/ paths are relative to it
command=(env DIFF2LIP_DISTRIBUTED=1 ${env_vars[@]+"${env_vars[@]}"}
  "$PYTHON" -m diff2lip_jax.train --config "$config" --workdir "$workdir" "$@")
{
  printf '=== %s %s: starting:' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)"
  printf ' %q' "${command[@]}"
  printf '\n'
} >>"$log_file"
setsid nohup "${command[@]}" >>"$log_file" 2>&1 </dev/null &
echo $! >"$pid_file"
echo "$(hostname): training started (pid $!), log $log_file"
