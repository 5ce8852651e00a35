#!/usr/bin/env bash
#
# Describe AMIs by id. Uses an image-id filter (not --image-ids) so that an
# unknown id is simply absent from the answer instead of failing the call.
# Prints the describe-images JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly MAX_IDS=100

usage() {
  cat <<USAGE
Usage: ${0##*/} [--] AMI_ID...

Describe 1 to ${MAX_IDS} AMIs (aws ec2 describe-images with an image-id filter)
and print the AWS JSON.

Options:
  -h, --help    show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local id
  parse_positional "$@"
  local -a ids=("${POSITIONAL[@]}")
  if ((${#ids[@]} < 1 || ${#ids[@]} > MAX_IDS)); then
    usage_error "between 1 and ${MAX_IDS} AMI ids are required"
  fi
  for id in "${ids[@]}"; do
    require_ami_id "${id}"
  done

  aws_call ec2 describe-images \
    --filters "[{\"Name\":\"image-id\",\"Values\":$(json_string_array "${ids[@]}")}]"
}

main "$@"
