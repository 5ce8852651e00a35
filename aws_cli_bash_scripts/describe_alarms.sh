#!/usr/bin/env bash
#
# List the CloudWatch metric alarms whose name starts with a prefix (aws
# cloudwatch describe-alarms; the CLI follows every page) and print the AWS
# JSON.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly PREFIX_REGEX='^[A-Za-z0-9._:/-]{1,255}$'

usage() {
  cat <<USAGE
Usage: ${0##*/} --prefix PREFIX

Print every metric alarm whose name begins with PREFIX.

Options:
  --prefix PREFIX   1..255 of A-Z a-z 0-9 . _ : / -
  -h, --help        show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local prefix="" have=0
  local LC_ALL=C
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --prefix)
        require_option_value "$1" "$#"
        prefix="$2"
        have=1
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  ((have)) || usage_error "--prefix is required"
  [[ "${prefix}" =~ ${PREFIX_REGEX} ]] || usage_error "invalid prefix: '${prefix}'"
  require_plain_cli_value "${prefix}" "prefix"

  aws_call cloudwatch describe-alarms --alarm-name-prefix "${prefix}" --alarm-types MetricAlarm
}

main "$@"
