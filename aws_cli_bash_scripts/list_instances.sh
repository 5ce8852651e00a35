#!/usr/bin/env bash
#
# List EC2 instances (by default only those tagged ManagedBy=ec2-creator-local).
# Prints the describe-instances JSON on stdout (all pages, merged by the CLI).

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly MAX_REQUEST_ID_LEN=128
readonly MAX_INSTANCE_IDS=1000

usage() {
  cat <<USAGE
Usage: ${0##*/} [--all] [--filter-instance-id ID]... [--request-id RID]...

List EC2 instances (aws ec2 describe-instances) and print the AWS JSON.

Options:
  --all                    do not restrict to tag ${MANAGED_BY_KEY}=${MANAGED_BY_VALUE}
  --filter-instance-id ID  only this instance (i-xxxxxxxx), as a filter, repeatable;
                           an id EC2 does not know is simply not listed
  --request-id RID         only instances tagged RequestId=RID, repeatable
  -h, --help               show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local all=0
  local -a filter_ids=() request_ids=() filters=()

  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --all)
        all=1
        shift
        ;;
      --filter-instance-id)
        require_option_value "$1" "$#"
        require_instance_id "$2"
        filter_ids+=("$2")
        shift 2
        ;;
      --request-id)
        require_option_value "$1" "$#"
        require_text "$2" 1 "${MAX_REQUEST_ID_LEN}" "request id"
        request_ids+=("$2")
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  if ((${#filter_ids[@]} > MAX_INSTANCE_IDS || ${#request_ids[@]} > MAX_INSTANCE_IDS)); then
    usage_error "at most ${MAX_INSTANCE_IDS} --filter-instance-id or --request-id options"
  fi

  if ((!all)); then
    filters+=("{\"Name\":$(json_string "tag:${MANAGED_BY_KEY}"),\"Values\":$(json_string_array "${MANAGED_BY_VALUE}")}")
  fi
  if ((${#request_ids[@]} > 0)); then
    filters+=("{\"Name\":\"tag:RequestId\",\"Values\":$(json_string_array "${request_ids[@]}")}")
  fi
  if ((${#filter_ids[@]} > 0)); then
    filters+=("{\"Name\":\"instance-id\",\"Values\":$(json_string_array "${filter_ids[@]}")}")
  fi

  local -a args=()
  if ((${#filters[@]} > 0)); then
    local joined
    joined="$(IFS=,; printf '%s' "${filters[*]}")"
    args+=(--filters "[${joined}]")
  fi

  aws_call ec2 describe-instances "${args[@]}"
}

main "$@"
