#!/usr/bin/env bash
# Deletes a TPU VM slice (all workers and their local disks; the gs:// workdir is kept).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

yes=0

usage() {
  cat <<USAGE
Usage: ${0##*/} [options]

Deletes the TPU VM TPU_NAME. Local disks (logs, copied shards) go with it; checkpoints in the
gs:// workdir stay. gcloud asks for confirmation unless --yes.

Options (env var in brackets):
  --yes             do not ask (passes --quiet to gcloud)
$COMMON_OPTIONS_HELP
USAGE
}

split_equals "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --yes) yes=1; shift ;;
    *)
      common_option "$@"
      if ((SHIFT == 0)); then die "unknown option: $1 (see --help)"; fi
      shift "$SHIFT" ;;
  esac
done

delete=(delete "$TPU_NAME")
if ((yes)); then delete+=(--quiet); fi
tpu_vm "${delete[@]}"
