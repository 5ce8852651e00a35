#!/usr/bin/env bash
#
# Add or overwrite tags on one EC2 instance (aws ec2 create-tags). Tags travel
# as JSON, never as Key=...,Value=... shorthand. Prints nothing on success.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/} --instance-id ID --tag KEY VALUE [--tag KEY VALUE]...

Set tags on one instance (aws ec2 create-tags; an existing key is
overwritten). The tags are passed to the CLI as JSON.

Options:
  --instance-id ID   i-xxxxxxxx (i- and 8 to 17 hex digits)
  --tag KEY VALUE    key: 1..128 characters, value: 0..256; 1 to 50 tags
  -h, --help         show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local id="" have_id=0
  local -a pairs=()
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --instance-id)
        require_option_value "$1" "$#"
        id="$2"
        have_id=1
        shift 2
        ;;
      --tag)
        (($# >= 3)) || usage_error "option --tag requires KEY and VALUE"
        require_text "$2" 1 128 "tag key"
        require_text "$3" 0 256 "tag value"
        pairs+=("$2" "$3")
        shift 3
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  ((have_id)) || usage_error "--instance-id is required"
  require_instance_id "${id}"
  ((${#pairs[@]} > 0)) || usage_error "at least one --tag is required"
  ((${#pairs[@]} <= 100)) || usage_error "at most 50 tags"

  aws_call ec2 create-tags --resources "${id}" --tags "$(json_tags "${pairs[@]}")"
}

main "$@"
