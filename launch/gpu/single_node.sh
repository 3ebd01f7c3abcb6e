#!/usr/bin/env bash
# Trains on one machine: a single JAX process drives all its visible GPUs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

WORKDIR=${WORKDIR:-}
CONFIG=${CONFIG:-configs/released.py}
PYTHON=${PYTHON:-python3}
MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
# Overlaps the gradient all-reduce with the backward pass.
GPU_XLA_FLAGS=${GPU_XLA_FLAGS:---xla_gpu_enable_latency_hiding_scheduler=true}

usage() {
  cat <<USAGE
Usage: ${0##*/} --workdir DIR [options] [-- train flags]

Runs, from the repository root,
  $PYTHON -m diff2lip_jax.train --config CONFIG --workdir DIR [train flags]
as one process that sees every visible GPU (no jax.distributed), with GPU XLA settings.
Re-running it with the same --workdir resumes from the latest checkpoint there.

Options (env var in brackets):
  --workdir DIR       checkpoints and logs, local path or gs:// [WORKDIR]
  --config FILE       config file, relative to the repository [CONFIG, default configs/released.py]
  --gpus LIST         GPUs to use, e.g. 0,1,2,3 [CUDA_VISIBLE_DEVICES, default all]
  --mem_fraction F    share of GPU memory JAX preallocates
                      [XLA_PYTHON_CLIENT_MEM_FRACTION, default 0.90]
  --dry_run           print the command instead of running it [DRY_RUN=1]
  -h, --help          show this help
Also read: PYTHON (default python3); GPU_XLA_FLAGS (default
  --xla_gpu_enable_latency_hiding_scheduler=true), appended to any XLA_FLAGS already set.

Words after "--" go to the training command unchanged, e.g.
  ${0##*/} --workdir /ckpt/run1 --gpus 0,1,2,3 -- --config.data.shards=/data/shards
USAGE
}

gpu_env=()
split_equals "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --workdir) WORKDIR=${2:?"--workdir needs a value"}; shift 2 ;;
    --config) CONFIG=${2:?"--config needs a value"}; shift 2 ;;
    --gpus) gpu_env+=("CUDA_VISIBLE_DEVICES=${2:?"--gpus needs a value"}"); shift 2 ;;
    --mem_fraction) MEM_FRACTION=${2:?"--mem_fraction needs a value"}; shift 2 ;;
    --dry_run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
[[ -n $WORKDIR ]] || die "--workdir is required (see --help)"

cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # repository root: configs/ paths are relative to it
run env ${gpu_env[@]+"${gpu_env[@]}"} \
  "XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }$GPU_XLA_FLAGS" \
  "XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION" \
  "$PYTHON" -m diff2lip_jax.train --config "$CONFIG" --workdir "$WORKDIR" "$@"
