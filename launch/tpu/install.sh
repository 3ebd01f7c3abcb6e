#!/usr/bin/env bash
# Copies the code to every worker of a TPU VM slice and installs it with jax[tpu].
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REPO_URL=${REPO_URL:-}
REPO_REF=${REPO_REF:-main}
TARBALL=${TARBALL:-}
JAX_SPEC=${JAX_SPEC:-jax[tpu]}
REMOTE_PYTHON=${REMOTE_PYTHON:-python3}
LIBTPU_URL=https://storage.googleapis.com/jax-releases/libtpu_releases.html
REMOTE_TARBALL=diff2lip-jax.tar.gz  # relative to the remote home

usage() {
  cat <<USAGE
Usage: ${0##*/} [options]

Puts the code in ~/REMOTE_DIR on every worker and runs pip install -e . "JAX_SPEC" there.
The code comes from, in order of preference: --repo (git clone on the workers), --tarball
(copied with scp), or else 'git archive HEAD' of this checkout (committed files only).

Options (env var in brackets):
  --repo URL        git URL the workers clone [REPO_URL]
  --ref REF         branch, tag or commit to check out with --repo [REPO_REF, default main]
  --tarball PATH    local .tar.gz of the repository to copy [TARBALL]
  --remote_dir DIR  install directory, relative to the remote home
                    [REMOTE_DIR, default diff2lip-jax]
  --jax_spec SPEC   pip requirement for JAX, e.g. 'jax[tpu]==0.10.2' [JAX_SPEC, default jax[tpu]]
$COMMON_OPTIONS_HELP

Example:
  ${0##*/} --name my-tpu --zone us-central2-b --repo https://github.com/you/diff2lip-jax --ref v0.1
USAGE
}

split_equals "$@"
set -- ${ARGS[@]+"${ARGS[@]}"}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --repo) REPO_URL=${2:?"--repo needs a value"}; shift 2 ;;
    --ref) REPO_REF=${2:?"--ref needs a value"}; shift 2 ;;
    --tarball) TARBALL=${2:?"--tarball needs a value"}; shift 2 ;;
    --remote_dir) REMOTE_DIR=${2:?"--remote_dir needs a value"}; shift 2 ;;
    --jax_spec) JAX_SPEC=${2:?"--jax_spec needs a value"}; shift 2 ;;
    *)
      common_option "$@"
      if ((SHIFT == 0)); then die "unknown option: $1 (see --help)"; fi
      shift "$SHIFT" ;;
  esac
done

if [[ -n $REPO_URL ]]; then
  fetch="{ $(remote_command test -d "$REMOTE_DIR/.git")"
  fetch+=" || $(remote_command git clone --quiet "$REPO_URL" "$REMOTE_DIR"); }"
  fetch+=" && $(remote_command git -C "$REMOTE_DIR" fetch --quiet origin "$REPO_REF")"
  fetch+=" && $(remote_command git -C "$REMOTE_DIR" checkout --quiet --detach FETCH_HEAD)"
else
  if [[ -z $TARBALL ]]; then
    repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    if [[ -n $(git -C "$repo_root" status --porcelain --untracked-files=no) ]]; then
      echo "warning: uncommitted changes in $repo_root are not shipped (git archive HEAD)" >&2
    fi
    TARBALL=$(mktemp "${TMPDIR:-/tmp}/diff2lip-jax.XXXXXX")
    trap 'rm -f "$TARBALL"' EXIT
    run git -C "$repo_root" archive --format=tar.gz --output="$TARBALL" HEAD
  elif [[ ! -f $TARBALL ]]; then
    die "--tarball $TARBALL: no such file"
  fi
  tpu_vm scp "$TARBALL" "$TPU_NAME:$REMOTE_TARBALL" --worker=all
  fetch="$(remote_command mkdir -p "$REMOTE_DIR")"
  fetch+=" && $(remote_command tar -xzf "$REMOTE_TARBALL" -C "$REMOTE_DIR")"
fi

# Installed into the user site (TPU VM images have no venv tooling by default); the package's
# own dependencies and jax[tpu] are resolved together so the TPU jaxlib/libtpu win.
install="$(remote_command cd "$REMOTE_DIR")"
install+=" && $(remote_command "$REMOTE_PYTHON" -m pip install --quiet --upgrade pip)"
install+=" && $(remote_command "$REMOTE_PYTHON" -m pip install --quiet -e . "$JAX_SPEC" \
  -f "$LIBTPU_URL")"
tpu_vm ssh "$TPU_NAME" --worker=all "--command=$fetch && $install"
