#!/usr/bin/env bash
#
# List the region's default subnets (those of the default VPC, one per
# availability zone): where a launch without a subnet goes. Prints the
# describe-subnets JSON on stdout (an empty Subnets list when there is none).

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/}

List the default subnets of the region (aws ec2 describe-subnets with a
default-for-az filter) and print the AWS JSON. Each names its VpcId: the
default VPC. None means a launch needs a subnet the service does not pass.

Options:
  -h, --help    show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  parse_positional "$@"
  if ((${#POSITIONAL[@]} > 0)); then
    usage_error "unexpected argument: '${POSITIONAL[0]}'"
  fi
  aws_call ec2 describe-subnets --filters '[{"Name":"default-for-az","Values":["true"]}]'
}

main "$@"
