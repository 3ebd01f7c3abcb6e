#!/usr/bin/env bash
# Shows (and by default follows) the training log of one worker, or of all workers interleaved.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKER=${WORKER:-0}
LINES_SHOWN=${LINES_SHOWN:-100}
follow=1

usage() {
  cat <<USAGE
Usage: ${0##*/} [options]

Runs tail on ~/LOG_DIR/train.log of a worker (the log worker_train.sh writes). Ctrl-C stops
following; training goes on.

Options (env var in brackets):
  --worker N        worker index, or 'all' for every worker interleaved [WORKER, default 0]
  --lines N         lines of history to show [LINES_SHOWN, default 100]
  --no_follow       print and exit instead of following
  --log_dir DIR     per-worker log directory, relative to the remote home
                    [LOG_DIR, default diff2lip-logs]
$COMMON_OPTIONS_HELP
USAGE
}

split_equals "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --worker) WORKER=${2:?"--worker needs a value"}; shift 2 ;;
    --lines) LINES_SHOWN=${2:?"--lines needs a value"}; shift 2 ;;
    --no_follow) follow=0; shift ;;
    --log_dir) LOG_DIR=${2:?"--log_dir needs a value"}; shift 2 ;;
    *)
      common_option "$@"
      if ((SHIFT == 0)); then die "unknown option: $1 (see --help)"; fi
      shift "$SHIFT" ;;
  esac
done
[[ $WORKER =~ ^([0-9]+|all)$ ]] || die "--worker must be a number or 'all', got '$WORKER'"

tail_command=(tail -n "$LINES_SHOWN")
if ((follow)); then tail_command+=(-F); fi
tpu_vm ssh "$TPU_NAME" "--worker=$WORKER" \
  "--command=$(remote_command "${tail_command[@]}" "$LOG_DIR/train.log")"
