#!/usr/bin/env bash
#
# Put (create or replace) the CloudWatch alarm that stops one idle instance:
# average CPUUtilization below a threshold for N minutes (5-minute periods)
# fires EC2's own stop action, so the instance is stopped even while the API
# server is down (aws cloudwatch put-metric-alarm). Prints nothing on success.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly PERIOD_SECONDS=300
# A percentage above 0 and up to 100, with up to 4 decimals.
readonly PERCENT_REGEX='^(100(\.0{1,4})?|[0-9]{1,2}(\.[0-9]{1,4})?)$'
readonly ALARM_NAME_REGEX='^[A-Za-z0-9._:/-]{1,255}$'
readonly REGION_REGEX='^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$'

usage() {
  cat <<USAGE
Usage: ${0##*/} --instance-id ID --alarm-name NAME --cpu-below PERCENT --minutes N

Create or replace the alarm NAME: when the instance's average CPU stays below
PERCENT for N minutes, CloudWatch stops it (arn:aws:automate:REGION:ec2:stop).
Missing data (a stopped instance) does not count as idle.

Options:
  --instance-id ID      i-xxxxxxxx (i- and 8 to 17 hex digits)
  --alarm-name NAME     1..255 of A-Z a-z 0-9 . _ : / -
  --cpu-below PERCENT   above 0, up to 100 (up to 4 decimals)
  --minutes N           5 to 1440, a multiple of 5
  -h, --help            show this help

Environment: AWS_REGION (required: the stop action's region), AWS_CLI,
EC2_ENDPOINT_URL.
USAGE
}

main() {
  local id="" name="" percent="" minutes="" option
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --instance-id | --alarm-name | --cpu-below | --minutes)
        require_option_value "$1" "$#"
        option="${1#--}"
        case "${option}" in
          instance-id) id="$2" ;;
          alarm-name) name="$2" ;;
          cpu-below) percent="$2" ;;
          minutes) minutes="$2" ;;
        esac
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  require_instance_id "${id}"
  local LC_ALL=C
  [[ "${name}" =~ ${ALARM_NAME_REGEX} ]] || usage_error "invalid alarm name: '${name}'"
  require_plain_cli_value "${name}" "alarm name"
  if [[ ! "${percent}" =~ ${PERCENT_REGEX} ]] || [[ "${percent}" =~ ^0+(\.0*)?$ ]]; then
    usage_error "--cpu-below must be a percentage above 0 and up to 100, got '${percent}'"
  fi
  require_int_range "${minutes}" 5 1440 "--minutes"
  ((10#${minutes} % 5 == 0)) || usage_error "--minutes must be a multiple of 5"
  [[ "${AWS_REGION:-}" =~ ${REGION_REGEX} ]] || usage_error "AWS_REGION must name the instance's region"

  local periods=$((10#${minutes} / 5))
  aws_call cloudwatch put-metric-alarm --alarm-name "${name}" \
    --alarm-description "Stops ${id} after $((10#${minutes})) minutes below ${percent}% CPU (ec2-creator-local)" \
    --namespace AWS/EC2 --metric-name CPUUtilization \
    --dimensions "[{\"Name\":\"InstanceId\",\"Value\":$(json_string "${id}")}]" \
    --statistic Average --period "${PERIOD_SECONDS}" \
    --evaluation-periods "${periods}" --datapoints-to-alarm "${periods}" \
    --threshold "${percent}" --comparison-operator LessThanThreshold \
    --treat-missing-data notBreaching \
    --alarm-actions "arn:aws:automate:${AWS_REGION}:ec2:stop" \
    --tags "$(json_tags "${MANAGED_BY_KEY}" "${MANAGED_BY_VALUE}")"
}

main "$@"
