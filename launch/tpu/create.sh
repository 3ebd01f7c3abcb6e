#!/usr/bin/env bash
# Creates a Cloud TPU VM slice (all its workers) for training.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
TPU_VERSION=${TPU_VERSION:-}
PROVISIONING=${PROVISIONING:-standard}

usage() {
  cat <<USAGE
Usage: ${0##*/} [options] [-- extra gcloud create flags]

Creates the TPU VM slice TPU_NAME with gcloud compute tpus tpu-vm create.

Options (env var in brackets):
  --accelerator_type T  e.g. v4-32, v5litepod-16, v5p-32, v6e-16 [ACCELERATOR_TYPE, default v4-32]
  --version V           TPU software (runtime) version [TPU_VERSION, default by generation:
                        v4 and older tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite,
                        v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e]
  --spot                Spot VM: cheap, can be preempted at any time [PROVISIONING=spot]
  --preemptible         legacy preemptible VM (24 h max) [PROVISIONING=preemptible]
$COMMON_OPTIONS_HELP

Words after "--" go to gcloud unchanged (e.g. --network=NET --reserved --internal-ips).

Example:
  ${0##*/} --name my-tpu --zone us-central2-b --accelerator_type v4-32 --spot
USAGE
}

# The runtime image that carries the right TPU driver for the accelerator's generation.
default_version() {
  case $1 in
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

split_equals "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --accelerator_type) ACCELERATOR_TYPE=${2:?"--accelerator_type needs a value"}; shift 2 ;;
    --version) TPU_VERSION=${2:?"--version needs a value"}; shift 2 ;;
    --spot) PROVISIONING=spot; shift ;;
    --preemptible) PROVISIONING=preemptible; shift ;;
    --) shift; break ;;
    *)
      common_option "$@"
      if ((SHIFT == 0)); then die "unknown option: $1 (see --help)"; fi
      shift "$SHIFT" ;;
  esac
done

create=(create "$TPU_NAME" "--accelerator-type=$ACCELERATOR_TYPE"
  "--version=${TPU_VERSION:-$(default_version "$ACCELERATOR_TYPE")}")
case $PROVISIONING in
  standard) ;;
  spot) create+=(--spot) ;;
  preemptible) create+=(--preemptible) ;;
  *) die "PROVISIONING must be standard, spot or preemptible, got '$PROVISIONING'" ;;
esac
tpu_vm "${create[@]}" "$@"
