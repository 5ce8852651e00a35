#!/usr/bin/env bash
#
# The account's free plan: type (FREE or PAID), status, remaining credits, expiry.
# Prints the freetier get-account-plan-state JSON on stdout (real AWS only: the
# local emulator does not implement the freetier service).

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/}

Show the account's AWS Free Tier plan (aws freetier get-account-plan-state,
in us-east-1) and print the AWS JSON.

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
  aws_call freetier get-account-plan-state --region us-east-1
}

main "$@"
