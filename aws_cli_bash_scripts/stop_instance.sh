#!/usr/bin/env bash
#
# Stop one EC2 instance (aws ec2 stop-instances). Prints the AWS JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly AWS_OPERATION="stop-instances"

usage() {
  cat <<USAGE
Usage: ${0##*/} [--] INSTANCE_ID

Stop one EC2 instance (aws ec2 ${AWS_OPERATION}) and print the AWS JSON.

Arguments:
  INSTANCE_ID   i-xxxxxxxx (i- and 8 to 17 hex digits)

Options:
  -h, --help    show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local -a positional=()
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --)
        shift
        positional+=("$@")
        break
        ;;
      -*)
        usage_error "unknown option: '$1'"
        ;;
      *)
        positional+=("$1")
        shift
        ;;
    esac
  done
  if ((${#positional[@]} != 1)); then
    usage_error "exactly one INSTANCE_ID is required"
  fi
  require_instance_id "${positional[0]}"

  aws_call ec2 "${AWS_OPERATION}" --instance-ids "${positional[0]}"
}

main "$@"
