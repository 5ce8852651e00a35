#!/usr/bin/env bash
#
# Find the EC2 key pair named NAME in the region. Prints the describe-key-pairs
# JSON on stdout (an empty KeyPairs list when there is none).

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/} --key-name NAME

Find the key pair named NAME (aws ec2 describe-key-pairs with a key-name
filter) and print the AWS JSON; a missing key pair is an empty KeyPairs list,
not an error. The filter treats * and ? as wildcards: compare KeyName.

Options:
  --key-name NAME   key pair name: 1..255 printable characters
  -h, --help        show this help

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
      --key-name)
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
  ((have_name)) || usage_error "--key-name is required"
  require_text "${name}" 1 255 "key pair name"

  aws_call ec2 describe-key-pairs \
    --filters "[{\"Name\":\"key-name\",\"Values\":$(json_string_array "${name}")}]"
}

main "$@"
