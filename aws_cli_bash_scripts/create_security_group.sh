#!/usr/bin/env bash
#
# Create a security group tagged ManagedBy=ec2-creator-local (in the default
# VPC). Prints the create-security-group JSON ({"GroupId": ...}) on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly DEFAULT_DESCRIPTION="Managed by ec2-creator-local"

usage() {
  cat <<USAGE
Usage: ${0##*/} --name NAME [--description TEXT] [--request-id ID]

Create a security group (aws ec2 create-security-group) tagged
${MANAGED_BY_KEY}=${MANAGED_BY_VALUE} and print the AWS JSON.

Options:
  --name NAME           1..255 of a-z A-Z 0-9 space ._-:/()#,@+=&;{}!\$
                        (no * ? [ ]); must not begin with '-' or 'sg-'
  --description TEXT    1..255 of a-z A-Z 0-9 space ._-:/()#,@[]+=&;{}!\$*
                        (default "${DEFAULT_DESCRIPTION}")
  --request-id ID       also tag it RequestId=ID (the launch it is made for;
                        1..64 of a-z A-Z 0-9 -)
  -h, --help            show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

main() {
  local name="" have_name=0 description="${DEFAULT_DESCRIPTION}" request_id=""
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --name)
        require_option_value "$1" "$#"
        name="$2"
        have_name=1
        shift 2
        ;;
      --description)
        require_option_value "$1" "$#"
        description="$2"
        shift 2
        ;;
      --request-id)
        require_option_value "$1" "$#"
        request_id="$2"
        [[ "${request_id}" =~ ^[A-Za-z0-9][A-Za-z0-9-]{0,63}$ ]] \
          || usage_error "invalid request id: '${request_id}' (1..64 of a-z A-Z 0-9 -, not starting with -)"
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  ((have_name)) || usage_error "--name is required"
  require_sg_name "${name}"
  require_sg_description "${description}"

  local -a tags=("${MANAGED_BY_KEY}" "${MANAGED_BY_VALUE}")
  if [[ -n "${request_id}" ]]; then
    tags+=(RequestId "${request_id}")
  fi
  local tag_specs
  tag_specs="[{\"ResourceType\":\"security-group\",\"Tags\":$(json_tags "${tags[@]}")}]"

  aws_call ec2 create-security-group \
    --group-name "${name}" \
    --description "${description}" \
    --tag-specifications "${tag_specs}"
}

main "$@"
