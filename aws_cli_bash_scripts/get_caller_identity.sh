#!/usr/bin/env bash
#
# Tell which AWS account (and identity) the credentials belong to.
# Prints the sts get-caller-identity JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/}

Show the account, user id and ARN of the credentials in use (aws sts
get-caller-identity) and print the AWS JSON.

Options:
  -h, --help    show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  parse_positional "$@"
  if ((${#POSITIONAL[@]} > 0)); then
    usage_error "unexpected argument: '${POSITIONAL[0]}'"
  fi
  aws_call sts get-caller-identity
}

main "$@"
