#!/usr/bin/env bash
#
# Read public AWS service SSM parameters (e.g. the latest AMI ids).
# Prints the ssm get-parameters JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly MAX_NAMES=10
readonly MAX_NAME_LEN=2048
readonly NAME_REGEX='^/aws/service/[A-Za-z0-9/._-]+$'

usage() {
  cat <<USAGE
Usage: ${0##*/} [--] NAME...

Read 1 to ${MAX_NAMES} public SSM parameters (aws ssm get-parameters) and print
the AWS JSON. Each NAME must match ${NAME_REGEX}, e.g.
/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64

Options:
  -h, --help    show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL (also used for SSM), AWS_REGION.
USAGE
}

main() {
  local name
  parse_positional "$@"
  local -a names=("${POSITIONAL[@]}")
  if ((${#names[@]} < 1 || ${#names[@]} > MAX_NAMES)); then
    usage_error "between 1 and ${MAX_NAMES} parameter names are required"
  fi
  local LC_ALL=C
  for name in "${names[@]}"; do
    if ((${#name} > MAX_NAME_LEN)) || [[ ! "${name}" =~ ${NAME_REGEX} ]]; then
      usage_error "invalid parameter name: '${name}' (must match ${NAME_REGEX})"
    fi
  done

  aws_call ssm get-parameters --names "${names[@]}"
}

main "$@"
