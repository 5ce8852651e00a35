#!/usr/bin/env bash
#
# Remove the inbound SSH (tcp/22) rule for one IPv4 CIDR from a security group.
# Prints the revoke-security-group-ingress JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly AWS_OPERATION="revoke-security-group-ingress"

usage() {
  ssh_rule_usage "Remove the inbound tcp/${SSH_PORT} rule for CIDR from" "${AWS_OPERATION}"
}

main() {
  ssh_rule_main "${AWS_OPERATION}" "" usage "$@"
}

main "$@"
