#!/usr/bin/env bash
#
# Remove the inbound SSH (tcp/22) rule for one IPv4 CIDR from a security group.
# Prints the revoke-security-group-ingress JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly SSH_PORT=22

usage() {
  cat <<USAGE
Usage: ${0##*/} --group-id SG --cidr CIDR

Remove the inbound tcp/${SSH_PORT} rule for CIDR from security group SG
(aws ec2 revoke-security-group-ingress) and print the AWS JSON.

Options:
  --group-id SG   sg-xxxxxxxx
  --cidr CIDR     IPv4 CIDR, e.g. 203.0.113.7/32
  -h, --help      show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local group_id="" cidr="" have_group=0 have_cidr=0
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --group-id)
        require_option_value "$1" "$#"
        group_id="$2"
        have_group=1
        shift 2
        ;;
      --cidr)
        require_option_value "$1" "$#"
        cidr="$2"
        have_cidr=1
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  ((have_group)) || usage_error "--group-id is required"
  ((have_cidr)) || usage_error "--cidr is required"
  require_sg_id "${group_id}"
  require_cidr "${cidr}"

  local permissions
  permissions="[{\"IpProtocol\":\"tcp\",\"FromPort\":${SSH_PORT},\"ToPort\":${SSH_PORT},\"IpRanges\":[{\"CidrIp\":$(json_string "${cidr}")}]}]"

  aws_call ec2 revoke-security-group-ingress \
    --group-id "${group_id}" \
    --ip-permissions "${permissions}"
}

main "$@"
