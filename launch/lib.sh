# shellcheck shell=bash disable=SC2034  # ARGS is read by the scripts that source this
# Helpers shared by the launch scripts (sourced, not run). Written for bash 3.2+ (macOS
# workstations), hence ${a[@]+"${a[@]}"} wherever an array may be empty under set -u.

DRY_RUN=${DRY_RUN:-0}

die() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
  exit 2
}

# Splits "--flag=value" into "--flag" "value" up to the first "--", so both spellings work.
# Result in ARGS; use: split_equals "$@"; set -- ${ARGS[@]+"${ARGS[@]}"}
split_equals() {
  ARGS=()
  while (($#)); do
    case $1 in
      --) ARGS+=("$@"); return ;;
      --*=*) ARGS+=("${1%%=*}" "${1#*=}") ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
}

# Runs a command; with DRY_RUN=1 prints it instead, shell-quoted so it can be pasted back.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    local arg
    for arg in "$@"; do  # the remote command once more, unescaped, for reading
      if [[ $arg == --command=* ]]; then printf '#   remote: %s\n' "${arg#--command=}"; fi
    done
  else
    "$@"
  fi
}

# Quotes each argument with printf %q and joins them with spaces: the result, run by the remote
# login shell (bash on TPU VMs) that ssh hands --command to, rebuilds exactly these arguments.
# Nothing in it is expanded remotely ($, ~, quotes, spaces and globs are all escaped).
remote_command() {
  local quoted
  printf -v quoted ' %q' "$@"
  printf '%s' "${quoted# }"
}
