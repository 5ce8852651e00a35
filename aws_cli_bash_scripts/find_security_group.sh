#!/usr/bin/env bash
#
# Find security groups by name. Prints the describe-security-groups JSON on
# stdout (an empty SecurityGroups list when there is none).

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/} --name NAME

Find security groups named NAME (aws ec2 describe-security-groups with a
group-name filter) and print the AWS JSON.

Options:
  --name NAME   security group name: 1..255 of a-z A-Z 0-9 space
                ._-:/()#,@+=&;{}!\$ (no filter wildcards * ? [ ])
  -h, --help    show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local name="" have_name=0
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --name)
        require_option_value "$1" "$#"
        name="$2"
        have_name=1
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  ((have_name)) || usage_error "--name is required"
  require_sg_name "${name}"

  aws_call ec2 describe-security-groups \
    --filters "[{\"Name\":\"group-name\",\"Values\":$(json_string_array "${name}")}]"
}

main "$@"
