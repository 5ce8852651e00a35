# shellcheck shell=bash
#
# Shared helpers for the ec2-creator-local AWS CLI scripts.
#
# This file is sourced, never executed. It defines:
#   * the ManagedBy tag constants,
#   * AWS CLI defaults (pager off, timeouts, retry mode),
#   * die / usage_error,
#   * aws_call, the ONE place where the AWS CLI is run,
#   * argument validators and json_string (JSON string literal encoder).
#
# Environment (all optional):
#   AWS_CLI                  AWS CLI executable (default: aws)
#   AWS_CLI_CONNECT_TIMEOUT  --cli-connect-timeout seconds (default: 5)
#   AWS_CLI_READ_TIMEOUT     --cli-read-timeout seconds (default: 30)
#   AWS_RETRY_MODE           exported, default: standard
#   AWS_MAX_ATTEMPTS         exported, default: 3
#   EC2_ENDPOINT_URL         if non-empty, passed as --endpoint-url to every
#                            call (EC2 and SSM alike, e.g. a moto server)
#   AWS_REGION               if non-empty, passed as --region

if [[ -n "${_EC2CL_COMMON_SOURCED:-}" ]]; then
  return 0
fi
readonly _EC2CL_COMMON_SOURCED=1

# Used by the scripts that source this file.
# shellcheck disable=SC2034
readonly MANAGED_BY_KEY="ManagedBy"
# shellcheck disable=SC2034
readonly MANAGED_BY_VALUE="ec2-creator-local"
# EC2 takes up to 1,000 ids in one start/stop/terminate call.
readonly MAX_ACTION_IDS=1000

export AWS_PAGER=""
AWS_CLI="${AWS_CLI:-aws}"
AWS_CLI_CONNECT_TIMEOUT="${AWS_CLI_CONNECT_TIMEOUT:-5}"
AWS_CLI_READ_TIMEOUT="${AWS_CLI_READ_TIMEOUT:-30}"
export AWS_RETRY_MODE="${AWS_RETRY_MODE:-standard}"
export AWS_MAX_ATTEMPTS="${AWS_MAX_ATTEMPTS:-3}"

# Control characters that can never appear in our JSON (everything below
# 0x20 except tab, newline and carriage return, which json_string escapes).
readonly _EC2CL_FORBIDDEN_CTL=$'\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f'

# Characters EC2 allows in a VPC security group description; names use the
# same set minus the filter wildcards * ? [ ]. Matched with LC_ALL=C.
readonly _EC2CL_SG_NAME_REGEX='^[A-Za-z0-9 ._:/()#,@+=&;{}!$-]{1,255}$'
readonly _EC2CL_SG_DESCRIPTION_REGEX='^[]A-Za-z0-9 ._:/()#,@[+=&;{}!$*-]{1,255}$'

#######################################
# Print "<script name>: MSG" to stderr and exit 1.
# Arguments:
#   Message words.
#######################################
die() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
  exit 1
}

#######################################
# Print "<script name>: MSG" and the script's usage to stderr, exit 2.
# Globals:
#   usage (function defined by the sourcing script, optional)
# Arguments:
#   Message words.
#######################################
usage_error() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
  if declare -F usage >/dev/null; then
    usage >&2
  fi
  exit 2
}

#######################################
# Run the AWS CLI: "$AWS_CLI" GLOBAL_OPTS SERVICE OPERATION ARGS...
# stdout, stderr and the exit code of the CLI are passed through untouched.
# Globals:
#   AWS_CLI, AWS_CLI_CONNECT_TIMEOUT, AWS_CLI_READ_TIMEOUT,
#   EC2_ENDPOINT_URL, AWS_REGION
# Arguments:
#   SERVICE OPERATION [ARGS...]
# Returns:
#   The exit code of the AWS CLI.
#######################################
aws_call() {
  if (($# < 2)); then
    die "aws_call: SERVICE and OPERATION are required"
  fi
  if [[ ! "${AWS_CLI_CONNECT_TIMEOUT}" =~ ^[0-9]{1,4}$ ]]; then
    die "AWS_CLI_CONNECT_TIMEOUT must be a whole number of seconds"
  fi
  if [[ ! "${AWS_CLI_READ_TIMEOUT}" =~ ^[0-9]{1,4}$ ]]; then
    die "AWS_CLI_READ_TIMEOUT must be a whole number of seconds"
  fi
  local -a global=(
    --output json
    --cli-connect-timeout "${AWS_CLI_CONNECT_TIMEOUT}"
    --cli-read-timeout "${AWS_CLI_READ_TIMEOUT}"
  )
  if [[ -n "${EC2_ENDPOINT_URL:-}" ]]; then
    global+=(--endpoint-url "${EC2_ENDPOINT_URL}")
  fi
  if [[ -n "${AWS_REGION:-}" ]]; then
    global+=(--region "${AWS_REGION}")
  fi
  local rc=0
  "${AWS_CLI}" "${global[@]}" "$@" || rc=$?
  return "${rc}"
}

#######################################
# Print VALUE as a JSON string literal (with the surrounding quotes).
# Escapes backslash, double quote, newline, carriage return and tab; any
# other control character is an error (die).
# Arguments:
#   VALUE
# Outputs:
#   The JSON string literal on stdout, no trailing newline.
#######################################
json_string() {
  local s="$1"
  if [[ "${s}" == *["${_EC2CL_FORBIDDEN_CTL}"]* ]]; then
    die "value contains a control character that cannot be encoded"
  fi
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\n'/\\n}"
  s="${s//$'\r'/\\r}"
  s="${s//$'\t'/\\t}"
  printf '"%s"' "${s}"
}

#######################################
# Print the JSON array of tag objects for KEY VALUE [KEY VALUE]...
# Arguments:
#   Pairs of tag key and value.
#######################################
json_tags() {
  local out="" sep=""
  while (($# >= 2)); do
    out+="${sep}{\"Key\":$(json_string "$1"),\"Value\":$(json_string "$2")}"
    sep=","
    shift 2
  done
  printf '[%s]' "${out}"
}

#######################################
# Print a JSON array of string literals for each argument.
#######################################
json_string_array() {
  local out="" sep="" item
  for item in "$@"; do
    out+="${sep}$(json_string "${item}")"
    sep=","
  done
  printf '[%s]' "${out}"
}

# ----- validators (usage_error, exit 2, on failure) -----

require_instance_id() {
  local LC_ALL=C
  [[ "${1-}" =~ ^i-[0-9a-f]{8,17}$ ]] \
    || usage_error "invalid instance id: '${1-}' (expected i- and 8 to 17 hex digits)"
}

require_ami_id() {
  local LC_ALL=C
  [[ "${1-}" =~ ^ami-[0-9a-f]{8,17}$ ]] \
    || usage_error "invalid AMI id: '${1-}' (expected ami- and 8 to 17 hex digits)"
}

require_sg_id() {
  local LC_ALL=C
  [[ "${1-}" =~ ^sg-[0-9a-f]{8,17}$ ]] \
    || usage_error "invalid security group id: '${1-}' (expected sg- and 8 to 17 hex digits)"
}

#######################################
# Arguments:
#   VALUE MIN MAX NAME
#######################################
require_int_range() {
  local value="${1-}" min="$2" max="$3" name="$4"
  local LC_ALL=C
  if [[ ! "${value}" =~ ^[0-9]{1,9}$ ]] \
    || ((10#${value} < min || 10#${value} > max)); then
    usage_error "${name} must be a whole number from ${min} to ${max}, got '${value}'"
  fi
}

require_instance_type() {
  local value="${1-}"
  local LC_ALL=C
  if ((${#value} > 32)) || [[ ! "${value}" =~ ^[a-z][a-z0-9-]*\.[a-z0-9]+$ ]]; then
    usage_error "invalid instance type: '${value}' (e.g. t3.micro)"
  fi
}

require_device_name() {
  local LC_ALL=C
  [[ "${1-}" =~ ^/dev/[a-z0-9]+$ ]] \
    || usage_error "invalid device name: '${1-}' (e.g. /dev/xvda)"
}

require_cidr() {
  local value="${1-}" octet
  local LC_ALL=C
  local -a parts
  if [[ ! "${value}" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})/([0-9]{1,2})$ ]]; then
    usage_error "invalid IPv4 CIDR: '${value}' (e.g. 203.0.113.7/32)"
  fi
  parts=("${BASH_REMATCH[@]:1:4}")
  for octet in "${parts[@]}"; do
    if ((10#${octet} > 255)); then
      usage_error "invalid IPv4 CIDR: '${value}' (octet ${octet} > 255)"
    fi
  done
  if ((10#${BASH_REMATCH[5]} > 32)); then
    usage_error "invalid IPv4 CIDR: '${value}' (prefix length > 32)"
  fi
}

#######################################
# Free text that goes into JSON: length MIN..MAX characters, no control
# characters other than tab, newline and carriage return.
# Arguments:
#   VALUE MIN MAX NAME
#######################################
require_text() {
  local value="${1-}" min="$2" max="$3" name="$4"
  if ((${#value} < min || ${#value} > max)); then
    usage_error "${name} must be ${min} to ${max} characters long"
  fi
  if [[ "${value}" == *["${_EC2CL_FORBIDDEN_CTL}"]* ]]; then
    usage_error "${name} must not contain control characters"
  fi
}

#######################################
# A value passed to the AWS CLI as a plain option argument (not inside JSON)
# must not look like an option and must not use one of the AWS CLI's
# parameter-file prefixes (file://, fileb://, http://, https://), which the
# CLI would otherwise expand.
# Arguments:
#   VALUE NAME
#######################################
require_plain_cli_value() {
  local value="${1-}" name="$2" lower
  lower="${value,,}"
  if [[ "${value}" == -* ]]; then
    usage_error "${name} must not begin with '-'"
  fi
  case "${lower}" in
    file://* | fileb://* | http://* | https://*)
      usage_error "${name} must not begin with a URL/file prefix"
      ;;
  esac
}

#######################################
# Check that an option is followed by a value (usage_error otherwise).
# Values that begin with '-' are accepted: they only ever end up inside JSON
# or are validated before use.
# Arguments:
#   OPTION_NAME ARG_COUNT_INCLUDING_OPTION
#######################################
require_option_value() {
  local option="$1" count="$2"
  if ((count < 2)); then
    usage_error "option ${option} requires a value"
  fi
}

#######################################
# Validate a security group name: 1..255 of the characters EC2 allows in a
# VPC security group name (a-z A-Z 0-9 space ._-:/()#,@+=&;{}!$) but without
# the filter wildcards * ? [ ] (so that a group-name filter is an exact
# match on AWS and on moto alike); must not begin with '-', 'sg-' or a
# file/URL prefix.
# Arguments:
#   VALUE
#######################################
require_sg_name() {
  local value="${1-}"
  local LC_ALL=C
  if [[ ! "${value}" =~ ${_EC2CL_SG_NAME_REGEX} ]]; then
    usage_error "invalid security group name: '${value}' (1..255 of a-z A-Z 0-9 space ._-:/()#,@+=&;{}!\$)"
  fi
  if [[ "${value,,}" == sg-* ]]; then
    usage_error "security group name must not begin with 'sg-'"
  fi
  require_plain_cli_value "${value}" "security group name"
}

#######################################
# Validate a security group description: 1..255 of the characters EC2 allows
# (a-z A-Z 0-9 space ._-:/()#,@[]+=&;{}!$*); must not begin with '-' or a
# file/URL prefix.
# Arguments:
#   VALUE
#######################################
require_sg_description() {
  local value="${1-}"
  local LC_ALL=C
  if [[ ! "${value}" =~ ${_EC2CL_SG_DESCRIPTION_REGEX} ]]; then
    usage_error "invalid security group description (1..255 of a-z A-Z 0-9 space ._-:/()#,@[]+=&;{}!\$*)"
  fi
  require_plain_cli_value "${value}" "security group description"
}

#######################################
# Parse a positional-only CLI: -h/--help prints usage and exits 0, `--` ends options, any other
# option is a usage error. The arguments are left in the global array POSITIONAL.
# Arguments:
#   The script's own arguments.
#######################################
parse_positional() {
  POSITIONAL=()
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --)
        shift
        POSITIONAL+=("$@")
        break
        ;;
      -*)
        usage_error "unknown option: '$1'"
        ;;
      *)
        POSITIONAL+=("$1")
        shift
        ;;
    esac
  done
}

#######################################
# Usage of an instance action script (start / stop / destroy).
# Arguments:
#   VERB (e.g. Start), OPERATION (e.g. start-instances)
#######################################
instance_action_usage() {
  local verb="$1" operation="$2"
  cat <<USAGE
Usage: ${0##*/} [--] INSTANCE_ID...

${verb} EC2 instances (aws ec2 ${operation}) in one call and print the AWS
JSON (one entry per instance; an id EC2 does not know fails the whole call).

Arguments:
  INSTANCE_ID   i-xxxxxxxx (i- and 8 to 17 hex digits); 1 to ${MAX_ACTION_IDS}, no repeats

Options:
  -h, --help    show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

#######################################
# The whole CLI of an instance action script:
#   SCRIPT [--] INSTANCE_ID...  ->  aws ec2 OPERATION --instance-ids INSTANCE_ID...
# Arguments:
#   OPERATION, then the script's own arguments.
#######################################
instance_action_main() {
  local operation="$1"
  shift
  parse_positional "$@"
  local -a positional=("${POSITIONAL[@]}")
  if ((${#positional[@]} < 1 || ${#positional[@]} > MAX_ACTION_IDS)); then
    usage_error "1 to ${MAX_ACTION_IDS} INSTANCE_IDs are required"
  fi
  local id
  local -A seen=()
  for id in "${positional[@]}"; do
    require_instance_id "${id}"
    [[ -z "${seen[${id}]+x}" ]] || usage_error "instance id ${id} is given twice"
    seen[${id}]=1
  done

  aws_call ec2 "${operation}" --instance-ids "${positional[@]}"
}

readonly SSH_PORT=22

#######################################
# Usage of an SSH rule script (authorize / revoke).
# Arguments:
#   WHAT (a sentence start, e.g. "Allow inbound tcp/22 from CIDR on"), OPERATION
#######################################
ssh_rule_usage() {
  local what="$1" operation="$2"
  cat <<USAGE
Usage: ${0##*/} --group-id SG --cidr CIDR

${what} security group SG
(aws ec2 ${operation}) and print the AWS JSON.

Options:
  --group-id SG   sg-xxxxxxxx
  --cidr CIDR     IPv4 CIDR, e.g. 203.0.113.7/32
  -h, --help      show this help

Environment: AWS_CLI, EC2_ENDPOINT_URL, AWS_REGION.
USAGE
}

#######################################
# The whole CLI of an SSH rule script:
#   SCRIPT --group-id SG --cidr CIDR  ->  aws ec2 OPERATION --group-id SG --ip-permissions '[tcp/22 from CIDR]'
# Arguments:
#   OPERATION, the rule's description ("" for none: a revoke matches the rule without it), the usage
#   function, then the script's own arguments.
#######################################
ssh_rule_main() {
  local operation="$1" description="$2" usage_fn="$3"
  shift 3
  local group_id="" cidr="" have_group=0 have_cidr=0
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        "${usage_fn}"
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

  local range
  range="{\"CidrIp\":$(json_string "${cidr}")"
  if [[ -n "${description}" ]]; then
    range+=",\"Description\":$(json_string "${description}")"
  fi
  range+="}"
  aws_call ec2 "${operation}" \
    --group-id "${group_id}" \
    --ip-permissions "[{\"IpProtocol\":\"tcp\",\"FromPort\":${SSH_PORT},\"ToPort\":${SSH_PORT},\"IpRanges\":[${range}]}]"
}
