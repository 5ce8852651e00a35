#!/usr/bin/env bash
#
# Remove tags (whatever their value) from one EC2 instance (aws ec2
# delete-tags). Keys travel as JSON. Prints nothing on success.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/} --instance-id ID --key KEY [--key KEY]...

Remove the tags with these keys from one instance (aws ec2 delete-tags),
whatever their values. The keys are passed to the CLI as JSON.

Options:
  --instance-id ID   i-xxxxxxxx (i- and 8 to 17 hex digits)
  --key KEY          tag key, 1..128 characters; 1 to 50 keys
  -h, --help         show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local id="" have_id=0 out="" sep="" key
  local -a keys=()
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
      --key)
        require_option_value "$1" "$#"
        require_text "$2" 1 128 "tag key"
        keys+=("$2")
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  ((have_id)) || usage_error "--instance-id is required"
  require_instance_id "${id}"
  ((${#keys[@]} > 0)) || usage_error "at least one --key is required"
  ((${#keys[@]} <= 50)) || usage_error "at most 50 keys"
  for key in "${keys[@]}"; do
    out+="${sep}{\"Key\":$(json_string "${key}")}"
    sep=","
  done

  aws_call ec2 delete-tags --resources "${id}" --tags "[${out}]"
}

main "$@"
