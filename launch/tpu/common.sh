# shellcheck shell=bash disable=SC2034  # the variables here are used by the scripts that source it
# Shared by the launch/tpu scripts (sourced, not run): defaults, dry-run and the gcloud wrapper.
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

TPU_NAME=${TPU_NAME:-diff2lip}
ZONE=${ZONE:-}          # empty: gcloud's configured compute/zone
PROJECT=${PROJECT:-}    # empty: gcloud's configured core/project
REMOTE_DIR=${REMOTE_DIR:-diff2lip-jax}  # on each worker, relative to the remote home
LOG_DIR=${LOG_DIR:-diff2lip-logs}       # on each worker, relative to the remote home

COMMON_OPTIONS_HELP="Common options (env var in brackets):
  --name NAME       TPU VM name [TPU_NAME, default diff2lip]
  --zone ZONE       zone, e.g. us-central2-b [ZONE, default: gcloud config compute/zone]
  --project ID      GCP project [PROJECT, default: gcloud config core/project]
  --dry_run         print the gcloud commands instead of running them [DRY_RUN=1]
  -h, --help        show this help"

# Handles one common option; sets SHIFT to the number of words it used (0: not a common option).
common_option() {
  SHIFT=2
  case $1 in
    --name) TPU_NAME=${2:?"--name needs a value"} ;;
    --zone) ZONE=${2:?"--zone needs a value"} ;;
    --project) PROJECT=${2:?"--project needs a value"} ;;
    --dry_run) DRY_RUN=1; SHIFT=1 ;;
    *) SHIFT=0 ;;
  esac
}

# gcloud compute tpus tpu-vm SUBCOMMAND ARGS..., plus --zone/--project when they are set.
tpu_vm() {
  local location=()
  if [[ -n $ZONE ]]; then location+=("--zone=$ZONE"); fi
  if [[ -n $PROJECT ]]; then location+=("--project=$PROJECT"); fi
  run gcloud compute tpus tpu-vm "$@" ${location[@]+"${location[@]}"}
}

