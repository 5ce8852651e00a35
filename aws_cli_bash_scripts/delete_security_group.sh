#!/usr/bin/env bash
#
# Delete one security group by id. Prints the delete-security-group output
# on stdout. The service only ever passes a group it made for one instance.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/} --group-id SG

Delete security group SG (aws ec2 delete-security-group) and print the AWS
JSON. EC2 refuses (DependencyViolation) while a network interface uses it.

Options:
  --group-id SG   sg-xxxxxxxx
  -h, --help      show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local group_id="" have_group=0
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --group-id)
        require_option_value "$1" "$#"
        group_id="$2"
        have_group=1
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  ((have_group)) || usage_error "--group-id is required"
  require_sg_id "${group_id}"

  aws_call ec2 delete-security-group --group-id "${group_id}"
}

main "$@"
