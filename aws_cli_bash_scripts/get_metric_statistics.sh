#!/usr/bin/env bash
#
# Read one CloudWatch metric of one EC2 instance (aws cloudwatch
# get-metric-statistics, namespace AWS/EC2, dimension InstanceId) and print
# the AWS JSON: Average, Minimum, Maximum, Sum and SampleCount per period.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

# The metrics the API serves (a fixed allow-list).
readonly METRICS=(CPUUtilization NetworkIn NetworkOut CPUCreditBalance StatusCheckFailed)
readonly TIME_REGEX='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'

usage() {
  cat <<USAGE
Usage: ${0##*/} --instance-id ID --metric NAME --start TIME --end TIME --period SECONDS

Print the datapoints of one AWS/EC2 metric of one instance between two
times (aws cloudwatch get-metric-statistics; at most 1,440 datapoints).

Options:
  --instance-id ID    i-xxxxxxxx (i- and 8 to 17 hex digits)
  --metric NAME       ${METRICS[*]}
  --start TIME        UTC, e.g. 2026-11-28T07:00:00Z
  --end TIME          UTC, after --start
  --period SECONDS    60 to 86400, a multiple of 60
  -h, --help          show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local id="" metric="" start="" end="" period="" option
  local LC_ALL=C
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --instance-id | --metric | --start | --end | --period)
        require_option_value "$1" "$#"
        option="${1#--}"
        case "${option}" in
          instance-id) id="$2" ;;
          metric) metric="$2" ;;
          start) start="$2" ;;
          end) end="$2" ;;
          period) period="$2" ;;
        esac
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  require_instance_id "${id}"
  local known=0 name
  for name in "${METRICS[@]}"; do
    [[ "${metric}" == "${name}" ]] && known=1
  done
  ((known)) || usage_error "--metric must be one of: ${METRICS[*]} (got '${metric}')"
  [[ "${start}" =~ ${TIME_REGEX} ]] || usage_error "--start must be a UTC time like 2026-11-28T07:00:00Z"
  [[ "${end}" =~ ${TIME_REGEX} ]] || usage_error "--end must be a UTC time like 2026-11-28T08:00:00Z"
  [[ "${start}" < "${end}" ]] || usage_error "--start must be before --end"
  require_int_range "${period}" 60 86400 "--period"
  ((10#${period} % 60 == 0)) || usage_error "--period must be a multiple of 60"

  aws_call cloudwatch get-metric-statistics --namespace AWS/EC2 --metric-name "${metric}" \
    --dimensions "[{\"Name\":\"InstanceId\",\"Value\":$(json_string "${id}")}]" \
    --start-time "${start}" --end-time "${end}" --period "$((10#${period}))" \
    --statistics Average Minimum Maximum Sum SampleCount
}

main "$@"
