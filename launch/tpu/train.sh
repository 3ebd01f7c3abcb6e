#!/usr/bin/env bash
# Starts training on every worker of a TPU VM slice, in the background, one log per worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKDIR=${WORKDIR:-}
CONFIG=${CONFIG:-configs/released.py}

usage() {
  cat <<USAGE
Usage: ${0##*/} --workdir gs://BUCKET/RUN [options] [-- train flags]

On every worker (gcloud ... ssh --worker=all) runs launch/tpu/worker_train.sh, which starts
  python3 -m diff2lip_jax.train --config CONFIG --workdir WORKDIR [train flags]
detached, with DIFF2LIP_DISTRIBUTED=1, output appended to ~/LOG_DIR/train.log on that worker.
Re-running it after a crash or preemption resumes from the latest checkpoint in WORKDIR.

Options (env var in brackets):
  --workdir URL     checkpoints and logs; must be shared by all workers, so gs://... [WORKDIR]
  --config FILE     config file, relative to the repository [CONFIG, default configs/released.py]
  --env KEY=VALUE   extra environment for training, repeatable (e.g. LIBTPU_INIT_ARGS=...)
  --restart         stop a training still running on the workers first (else: refuse)
  --remote_dir DIR  where install.sh put the code [REMOTE_DIR, default diff2lip-jax]
  --log_dir DIR     per-worker log directory, relative to the remote home
                    [LOG_DIR, default diff2lip-logs]
$COMMON_OPTIONS_HELP

Words after "--" go to the training command unchanged, spaces and quotes included, e.g.
  ${0##*/} --name my-tpu --workdir gs://my-bucket/runs/r1 -- \\
      --config.data.shards=/mnt/disks/data/shards --config.train.batch_size=256
USAGE
}

worker_flags=()
split_equals "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --workdir) WORKDIR=${2:?"--workdir needs a value"}; shift 2 ;;
    --config) CONFIG=${2:?"--config needs a value"}; shift 2 ;;
    --env) worker_flags+=(--env "${2:?"--env needs KEY=VALUE"}"); shift 2 ;;
    --restart) worker_flags+=(--restart); shift ;;
    --remote_dir) REMOTE_DIR=${2:?"--remote_dir needs a value"}; shift 2 ;;
    --log_dir) LOG_DIR=${2:?"--log_dir needs a value"}; shift 2 ;;
    --) shift; break ;;
    *)
      common_option "$@"
      if ((SHIFT == 0)); then die "unknown option: $1 (see --help)"; fi
      shift "$SHIFT" ;;
  esac
done
[[ -n $WORKDIR ]] || die "--workdir is required (a gs:// path all workers share; see --help)"
if [[ $WORKDIR != gs://* ]]; then
  echo "warning: --workdir $WORKDIR is not gs://; every worker must see the same directory" >&2
fi

remote=$(remote_command bash "$REMOTE_DIR/launch/tpu/worker_train.sh" --workdir "$WORKDIR" \
  --config "$CONFIG" --log_dir "$LOG_DIR" ${worker_flags[@]+"${worker_flags[@]}"} -- "$@")
tpu_vm ssh "$TPU_NAME" --worker=all "--command=$remote"
