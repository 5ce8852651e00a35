#!/usr/bin/env bash
#
# Delete CloudWatch alarms by name (aws cloudwatch delete-alarms). Prints
# nothing on success.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly ALARM_NAME_REGEX='^[A-Za-z0-9._:/-]{1,255}$'
readonly MAX_ALARMS=100

usage() {
  cat <<USAGE
Usage: ${0##*/} --alarm-name NAME [--alarm-name NAME]...

Delete the named CloudWatch alarms in one call (up to ${MAX_ALARMS}).

Options:
  --alarm-name NAME   1..255 of A-Z a-z 0-9 . _ : / -
  -h, --help          show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local -a names=()
  local LC_ALL=C
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --alarm-name)
        require_option_value "$1" "$#"
        [[ "$2" =~ ${ALARM_NAME_REGEX} ]] || usage_error "invalid alarm name: '$2'"
        require_plain_cli_value "$2" "alarm name"
        names+=("$2")
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  ((${#names[@]} > 0)) || usage_error "at least one --alarm-name is required"
  ((${#names[@]} <= MAX_ALARMS)) || usage_error "at most ${MAX_ALARMS} alarms per call"

  aws_call cloudwatch delete-alarms --alarm-names "${names[@]}"
}

main "$@"
