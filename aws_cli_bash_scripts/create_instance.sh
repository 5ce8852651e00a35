#!/usr/bin/env bash
#
# Launch one EC2 instance tagged ManagedBy=ec2-creator-local.
# Prints the run-instances JSON on stdout.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/common.sh
source "${SCRIPT_DIR}/common.sh"

readonly DEFAULT_STORAGE_GB=8
# What EC2 accepts for a gp3 volume. The free-tier allowance (8-30 GB) is the API's policy, not
# this script's: the script only keeps the CLI call well-formed.
readonly MIN_STORAGE_GB=1
readonly MAX_STORAGE_GB=16384
readonly DEFAULT_ROOT_DEVICE="/dev/xvda"
readonly DEFAULT_KEY_NAME="my_ec2_keypair"
readonly VOLUME_TYPE="gp3"
readonly MAX_NAME_LEN=255
readonly MAX_TAG_KEY_LEN=128
readonly MAX_TAG_VALUE_LEN=256
readonly MAX_REQUEST_ID_LEN=128
readonly MAX_USER_TAGS=40

usage() {
  cat <<USAGE
Usage: ${0##*/} --name NAME --ami AMI_ID --type INSTANCE_TYPE [options]

Launch one EC2 instance (aws ec2 run-instances) and print the AWS JSON.
The instance and its volume are tagged Name=NAME and
${MANAGED_BY_KEY}=${MANAGED_BY_VALUE}.

Required:
  --name NAME               Name tag, 1..${MAX_NAME_LEN} characters
  --ami AMI_ID              ami-xxxxxxxx
  --type INSTANCE_TYPE      e.g. t3.micro

Options:
  --storage-gb N            root gp3 volume size, ${MIN_STORAGE_GB}..${MAX_STORAGE_GB} (default ${DEFAULT_STORAGE_GB})
  --root-device DEV         root device name (default ${DEFAULT_ROOT_DEVICE})
  --security-group-id SG    sg-xxxxxxxx, repeatable
  --cpu-credits MODE        standard or unlimited (T instances' CPU credit mode;
                            EC2's default for t3/t3a/t4g is unlimited)
  --no-public-ip            launch without a public IPv4 address
  --tag KEY VALUE           extra tag, repeatable (not Name, ${MANAGED_BY_KEY},
                            RequestId, nor aws:*)
  --client-token TOKEN      idempotency token, 1..64 printable ASCII, no spaces
  --request-id RID          adds the tag RequestId=RID
  -h, --help                show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION, KEY_NAME (the key pair,
default ${DEFAULT_KEY_NAME}).
USAGE
}

#######################################
# Validate a key pair name: 1..255 of [A-Za-z0-9._@+=,-], not starting
# with '-'.
#######################################
require_key_name() {
  local value="${1-}"
  local LC_ALL=C
  if [[ ! "${value}" =~ ^[A-Za-z0-9_.@+=,][A-Za-z0-9_.@+=,-]{0,254}$ ]]; then
    usage_error "invalid key pair name: '${value}'"
  fi
}

#######################################
# Validate a client token: 1..64 printable ASCII, no spaces.
#######################################
require_client_token() {
  local value="${1-}"
  # Byte-wise character ranges: [!-~] is exactly printable ASCII.
  local LC_ALL=C
  if [[ ! "${value}" =~ ^[!-~]{1,64}$ ]]; then
    usage_error "client token must be 1 to 64 printable ASCII characters without spaces"
  fi
  require_plain_cli_value "${value}" "client token"
}

#######################################
# Validate a user tag key/value pair.
# Arguments:
#   KEY VALUE
#######################################
require_user_tag() {
  local key="$1" value="$2"
  require_text "${key}" 1 "${MAX_TAG_KEY_LEN}" "tag key"
  require_text "${value}" 0 "${MAX_TAG_VALUE_LEN}" "tag value"
  case "${key}" in
    Name | "${MANAGED_BY_KEY}" | RequestId)
      usage_error "tag key '${key}' is reserved"
      ;;
  esac
  local lower="${key,,}"
  if [[ "${lower}" == aws:* ]]; then
    usage_error "tag keys beginning with 'aws:' are reserved"
  fi
}

main() {
  local name="" ami="" type="" storage_gb="${DEFAULT_STORAGE_GB}"
  local root_device="${DEFAULT_ROOT_DEVICE}"
  local key_name="${KEY_NAME:-${DEFAULT_KEY_NAME}}"
  local client_token="" request_id="" have_request_id=0 cpu_credits="" public_ip=1
  local have_name=0 have_ami=0 have_type=0
  local -a security_groups=() user_tags=()
  local -A seen_keys=()

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
      --ami)
        require_option_value "$1" "$#"
        ami="$2"
        have_ami=1
        shift 2
        ;;
      --type)
        require_option_value "$1" "$#"
        type="$2"
        have_type=1
        shift 2
        ;;
      --storage-gb)
        require_option_value "$1" "$#"
        storage_gb="$2"
        shift 2
        ;;
      --root-device)
        require_option_value "$1" "$#"
        root_device="$2"
        shift 2
        ;;
      --security-group-id)
        require_option_value "$1" "$#"
        require_sg_id "$2"
        security_groups+=("$2")
        shift 2
        ;;
      --cpu-credits)
        require_option_value "$1" "$#"
        [[ "$2" == standard || "$2" == unlimited ]] \
          || usage_error "--cpu-credits must be standard or unlimited, not '$2'"
        cpu_credits="$2"
        shift 2
        ;;
      --no-public-ip)
        public_ip=0
        shift
        ;;
      --tag)
        if (($# < 3)); then
          usage_error "option --tag requires two values: KEY VALUE"
        fi
        require_user_tag "$2" "$3"
        if [[ -n "${seen_keys[$2]+x}" ]]; then
          usage_error "duplicate tag key '$2'"
        fi
        seen_keys[$2]=1
        user_tags+=("$2" "$3")
        shift 3
        ;;
      --client-token)
        require_option_value "$1" "$#"
        client_token="$2"
        require_client_token "${client_token}"
        shift 2
        ;;
      --request-id)
        require_option_value "$1" "$#"
        request_id="$2"
        have_request_id=1
        shift 2
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done

  ((have_name)) || usage_error "--name is required"
  ((have_ami)) || usage_error "--ami is required"
  ((have_type)) || usage_error "--type is required"
  require_text "${name}" 1 "${MAX_NAME_LEN}" "name"
  require_ami_id "${ami}"
  require_instance_type "${type}"
  require_int_range "${storage_gb}" "${MIN_STORAGE_GB}" "${MAX_STORAGE_GB}" "--storage-gb"
  storage_gb=$((10#${storage_gb}))
  require_device_name "${root_device}"
  require_key_name "${key_name}"
  if ((have_request_id)); then
    require_text "${request_id}" 1 "${MAX_REQUEST_ID_LEN}" "request id"
  fi
  if ((${#user_tags[@]} / 2 > MAX_USER_TAGS)); then
    usage_error "at most ${MAX_USER_TAGS} --tag options"
  fi

  local -a tags=(Name "${name}" "${MANAGED_BY_KEY}" "${MANAGED_BY_VALUE}")
  if ((have_request_id)); then
    tags+=(RequestId "${request_id}")
  fi
  tags+=("${user_tags[@]}")

  local tags_json block_devices tag_specs
  tags_json="$(json_tags "${tags[@]}")"
  block_devices="[{\"DeviceName\":$(json_string "${root_device}"),\"Ebs\":{\"VolumeSize\":${storage_gb},\"VolumeType\":\"${VOLUME_TYPE}\",\"DeleteOnTermination\":true}}]"
  tag_specs="[{\"ResourceType\":\"instance\",\"Tags\":${tags_json}},{\"ResourceType\":\"volume\",\"Tags\":${tags_json}}]"

  local -a args=(
    --image-id "${ami}"
    --instance-type "${type}"
    --count 1
    --key-name "${key_name}"
    --block-device-mappings "${block_devices}"
    --tag-specifications "${tag_specs}"
  )
  if ((${#security_groups[@]} > 0)); then
    args+=(--security-group-ids "${security_groups[@]}")
  fi
  if [[ -n "${cpu_credits}" ]]; then
    args+=(--credit-specification "{\"CpuCredits\":\"${cpu_credits}\"}")
  fi
  if ((!public_ip)); then
    args+=(--no-associate-public-ip-address)
  fi
  if [[ -n "${client_token}" ]]; then
    args+=(--client-token "${client_token}")
  fi

  aws_call ec2 run-instances "${args[@]}"
}

main "$@"
