#!/usr/bin/env bash
#
# Describe the free-tier-eligible EC2 instance types (or all with --all).
# Prints the describe-instance-types JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly FREE_TIER_FILTER='[{"Name":"free-tier-eligible","Values":["true"]}]'

usage() {
  cat <<USAGE
Usage: ${0##*/} [--all]

Describe EC2 instance types (aws ec2 describe-instance-types) and print the
AWS JSON. By default only free-tier-eligible types are listed.

Options:
  --all         list every instance type (no free-tier filter)
  -h, --help    show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local all=0
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --all)
        all=1
        shift
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done

  local -a args=()
  if ((!all)); then
    args+=(--filters "${FREE_TIER_FILTER}")
  fi
  aws_call ec2 describe-instance-types "${args[@]}"
}

main "$@"
