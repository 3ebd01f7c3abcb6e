#!/usr/bin/env bash
# Watchdog for Spot/preemptible slices: when the TPU VM is preempted (or gone), deletes it,
# recreates it, reinstalls the code and restarts training, which resumes from the latest
# checkpoint in the gs:// workdir. Run it on a machine that stays up (workstation, small VM).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
here=$(dirname "${BASH_SOURCE[0]}")

CHECK_INTERVAL=${CHECK_INTERVAL:-300}
once=0

usage() {
  cat <<USAGE
Usage: ${0##*/} --workdir gs://BUCKET/RUN [options] [-- train flags]

Every CHECK_INTERVAL seconds reads the TPU VM's state. PREEMPTED, TERMINATED or not found:
runs delete.sh --yes (if it exists), create.sh, install.sh and train.sh -- [train flags]. A
failed recovery (e.g. no Spot capacity) is retried at the next check. Stop it with Ctrl-C.
The scripts it runs take their settings from the environment: ACCELERATOR_TYPE, TPU_VERSION,
PROVISIONING, REPO_URL, REPO_REF, TARBALL, JAX_SPEC, REMOTE_DIR, LOG_DIR (see their --help).
With --dry_run the state is taken as PREEMPTED, so the whole recovery is printed, once.

Options (env var in brackets):
  --workdir URL     as for train.sh [WORKDIR]
  --config FILE     as for train.sh [CONFIG, default configs/released.py]
  --spot            recreate as a Spot VM [PROVISIONING=spot]
  --interval S      seconds between checks [CHECK_INTERVAL, default 300]
  --once            check (and recover) once, then exit
$COMMON_OPTIONS_HELP
USAGE
}

split_equals "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --workdir) WORKDIR=${2:?"--workdir needs a value"}; shift 2 ;;
    --config) CONFIG=${2:?"--config needs a value"}; shift 2 ;;
    --spot) PROVISIONING=spot; shift ;;
    --interval) CHECK_INTERVAL=${2:?"--interval needs a value"}; shift 2 ;;
    --once) once=1; shift ;;
    --) shift; break ;;
    *)
      common_option "$@"
      if ((SHIFT == 0)); then die "unknown option: $1 (see --help)"; fi
      shift "$SHIFT" ;;
  esac
done
[[ -n ${WORKDIR:-} ]] || die "--workdir is required (see --help)"
if [[ $DRY_RUN == 1 ]]; then once=1; fi
export TPU_NAME ZONE PROJECT DRY_RUN WORKDIR CONFIG PROVISIONING

# Sets state to the TPU VM's state, MISSING if it does not exist, UNKNOWN if gcloud failed.
read_state() {
  if [[ $DRY_RUN == 1 ]]; then
    tpu_vm describe "$TPU_NAME" --format='value(state)'
    state=PREEMPTED
    return
  fi
  local errors
  errors=$(mktemp)
  if state=$(tpu_vm describe "$TPU_NAME" --format='value(state)' 2>"$errors"); then
    :
  elif grep -q NOT_FOUND "$errors"; then
    state=MISSING
  else
    echo "warning: could not read the TPU state: $(cat "$errors")" >&2
    state=UNKNOWN
  fi
  rm -f "$errors"
}

recover() {
  if [[ $state != MISSING ]]; then "$here/delete.sh" --yes || return; fi
  "$here/create.sh" && "$here/install.sh" && "$here/train.sh" -- "$@"
}

while :; do
  read_state
  case $state in
    PREEMPTED | TERMINATED | MISSING)
      echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $TPU_NAME is $state: recreating it and resuming training"
      recover "$@" || echo "warning: recovery failed; retrying at the next check" >&2 ;;
  esac
  if ((once)); then break; fi
  sleep "$CHECK_INTERVAL"
done
