#!/usr/bin/env bash
#
# Describe the free-tier-eligible EC2 instance types.
# Prints the describe-instance-types JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly FREE_TIER_FILTER='[{"Name":"free-tier-eligible","Values":["true"]}]'

usage() {
  cat <<USAGE
Usage: ${0##*/}

Describe the free-tier-eligible EC2 instance types (aws ec2
describe-instance-types) and print the AWS JSON.

Options:
  -h, --help    show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  if (($# > 0)); then
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      *) usage_error "unexpected argument: '$1'" ;;
    esac
  fi
  aws_call ec2 describe-instance-types --filters "${FREE_TIER_FILTER}"
}

main "$@"
