#!/usr/bin/env bash
#
# Allow inbound SSH (tcp/22) from one IPv4 CIDR on a security group.
# Prints the authorize-security-group-ingress JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly AWS_OPERATION="authorize-security-group-ingress"
readonly RULE_DESCRIPTION="SSH (ec2-creator-local)"

usage() {
  ssh_rule_usage "Allow inbound tcp/${SSH_PORT} from CIDR on" "${AWS_OPERATION}"
}

main() {
  ssh_rule_main "${AWS_OPERATION}" "${RULE_DESCRIPTION}" usage "$@"
}

main "$@"
