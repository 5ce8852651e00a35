#!/usr/bin/env bash
#
# Start one EC2 instance (aws ec2 start-instances). Prints the AWS JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly AWS_OPERATION="start-instances"

usage() {
  instance_action_usage "Start" "${AWS_OPERATION}"
}

main() {
  instance_action_main "${AWS_OPERATION}" "$@"
}

main "$@"
