#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/common.sh.

load helpers/common
bats_require_minimum_version 1.5.0

setup() {
  fake_aws_setup
  COMMON="${SCRIPTS_DIR}/common.sh"
}

# run_common FUNC ARGS...: source common.sh in a fresh strict bash (with a
# stub usage function) and call FUNC ARGS...
run_common() {
  reset_fake_aws
  run --separate-stderr bash -c \
    'set -euo pipefail; source "$0"; usage() { echo "Usage: stub"; }; "$@"' \
    "${COMMON}" "$@"
}

# json_roundtrip VALUE: json_string VALUE must parse back to exactly VALUE.
json_roundtrip() {
  run_common json_string "$1"
  [ "${status}" -eq 0 ]
  python3 -c 'import json,sys; assert json.loads(sys.argv[1]) == sys.argv[2], (sys.argv[1], sys.argv[2])' \
    "${output}" "$1"
}

@test "common.sh is not executable and defines the ManagedBy constants" {
  [ ! -x "${COMMON}" ]
  run bash -c 'source "$0"; printf "%s=%s\n" "$MANAGED_BY_KEY" "$MANAGED_BY_VALUE"' "${COMMON}"
  [ "${status}" -eq 0 ]
  [ "${output}" = "ManagedBy=ec2-creator-local" ]
}

@test "json_string escapes quotes, backslashes, newlines, tabs and CR" {
  json_roundtrip 'plain'
  json_roundtrip ''
  json_roundtrip 'a "quoted" word'
  json_roundtrip 'back\slash \\ and \"'
  json_roundtrip $'line1\nline2\r\n\ttab'
  json_roundtrip 'x},{Key=Owner,Value=evil'
  json_roundtrip '$(touch /tmp/pwned) `id` ${HOME}'
  json_roundtrip 'ünïcödé ✓ 日本'
  json_roundtrip '--dry-run'
}

@test "json_string output is a single JSON string literal" {
  run_common json_string $'a"b\\c\nd'
  [ "${status}" -eq 0 ]
  [ "${output}" = '"a\"b\\c\nd"' ]
}

@test "json_string rejects other control characters with exit 1" {
  run_common json_string $'bell\a'
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"control character"* ]]
  run_common json_string $'esc\e[31m'
  [ "${status}" -eq 1 ]
}

@test "die prints the script name and exits 1" {
  run_common die "something broke"
  [ "${status}" -eq 1 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "common.sh: something broke" ]
}

@test "usage_error prints the message and usage on stderr and exits 2" {
  run_common usage_error "bad thing"
  [ "${status}" -eq 2 ]
  [ "${output}" = "" ]
  [ "${stderr}" = $'common.sh: bad thing\nUsage: stub' ]
}

@test "aws_call puts the global options first and passes args through" {
  run_common aws_call ec2 describe-instances --filters '[{"a": "b c"}]' ''
  [ "${status}" -eq 0 ]
  [ "${output}" = '{"ok": true}' ]
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances --filters '[{"a": "b c"}]' ''
}

@test "aws_call adds --endpoint-url only when EC2_ENDPOINT_URL is non-empty" {
  EC2_ENDPOINT_URL="" run_common aws_call ec2 describe-instances
  [ "${status}" -eq 0 ]
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances
  EC2_ENDPOINT_URL="http://127.0.0.1:5000" run_common aws_call ssm get-parameters
  [ "${status}" -eq 0 ]
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5000 ssm get-parameters
}

@test "aws_call adds --region only when AWS_REGION is non-empty" {
  AWS_REGION="" run_common aws_call ec2 describe-instances
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances
  AWS_REGION=eu-west-1 EC2_ENDPOINT_URL=http://e run_common aws_call ec2 describe-instances
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://e --region eu-west-1 ec2 describe-instances
}

@test "aws_call timeouts are overridable and validated" {
  AWS_CLI_CONNECT_TIMEOUT=2 AWS_CLI_READ_TIMEOUT=9 run_common aws_call ec2 x
  assert_argv --output json --cli-connect-timeout 2 --cli-read-timeout 9 ec2 x
  AWS_CLI_READ_TIMEOUT='5; rm -rf /' run_common aws_call ec2 x
  [ "${status}" -eq 1 ]
  assert_not_called
}

@test "aws_call passes the CLI exit code, stdout and stderr through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (Boom)" run_common aws_call ec2 x
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (Boom)" ]
}

@test "aws_call returns the exit code to a caller that checks it" {
  FAKE_AWS_EXIT=3 run_common bash -c 'source "$0"; rc=0; aws_call ec2 x || rc=$?; echo "rc=${rc}"' "${COMMON}"
  [ "${status}" -eq 0 ]
  [ "${output}" = "rc=3" ]
}

@test "aws_call exports AWS_PAGER empty and retry defaults" {
  run_common aws_call ec2 x
  [ "$(cat "${FAKE_AWS_ARGV}.env")" = $'AWS_PAGER=\nAWS_RETRY_MODE=standard\nAWS_MAX_ATTEMPTS=3' ]
  AWS_PAGER=less AWS_RETRY_MODE=adaptive AWS_MAX_ATTEMPTS=7 run_common aws_call ec2 x
  [ "$(cat "${FAKE_AWS_ARGV}.env")" = $'AWS_PAGER=\nAWS_RETRY_MODE=adaptive\nAWS_MAX_ATTEMPTS=7' ]
}

@test "AWS_CLI defaults to aws" {
  run bash -c 'unset AWS_CLI; source "$0"; echo "${AWS_CLI}"' "${COMMON}"
  [ "${output}" = "aws" ]
}

@test "require_instance_id" {
  for v in i-12345678 i-0123456789abcdef0 i-0123456789abcdef; do
    run_common require_instance_id "${v}"
    [ "${status}" -eq 0 ] || { echo "rejected ${v}"; false; }
  done
  for v in '' i-1234567 i-0123456789abcdef01 i-ABCDEF12 I-12345678 'i-12345678 ' \
    $'i-12345678\n' ami-12345678 -i-12345678 'i-1234567g'; do
    run_common require_instance_id "${v}"
    [ "${status}" -eq 2 ] || { echo "accepted ${v}"; false; }
    [[ "${stderr}" == *"Usage: stub"* ]]
  done
}

@test "require_ami_id and require_sg_id" {
  run_common require_ami_id ami-0d27e0fb3bac4d724
  [ "${status}" -eq 0 ]
  run_common require_sg_id sg-0123abcd
  [ "${status}" -eq 0 ]
  for v in '' ami-123 ami-XYZ12345 sg-12345678 'ami-12345678;x'; do
    run_common require_ami_id "${v}"
    [ "${status}" -eq 2 ] || { echo "accepted ${v}"; false; }
  done
  for v in '' sg-123 sg-ABCDEF12 ami-12345678 default; do
    run_common require_sg_id "${v}"
    [ "${status}" -eq 2 ] || { echo "accepted ${v}"; false; }
  done
}

@test "require_int_range" {
  for v in 8 08 30 17; do
    run_common require_int_range "${v}" 8 30 --storage-gb
    [ "${status}" -eq 0 ] || { echo "rejected ${v}"; false; }
  done
  for v in 7 31 '' -8 8.5 ' 8' 1e1 0x10 '8;1' 99999999999999999999; do
    run_common require_int_range "${v}" 8 30 --storage-gb
    [ "${status}" -eq 2 ] || { echo "accepted ${v}"; false; }
    [[ "${stderr}" == *"--storage-gb"* ]]
  done
}

@test "require_instance_type" {
  for v in t3.micro t4g.small c7i-flex.large m5.24xlarge u-6tb1.metal; do
    run_common require_instance_type "${v}"
    [ "${status}" -eq 0 ] || { echo "rejected ${v}"; false; }
  done
  for v in '' t3 T3.micro t3.micro. .micro 't3.micro ' t3.micro.x 3t.micro \
    --dry-run "t$(printf 'a%.0s' {1..30}).micro"; do
    run_common require_instance_type "${v}"
    [ "${status}" -eq 2 ] || { echo "accepted ${v}"; false; }
  done
}

@test "require_device_name" {
  for v in /dev/xvda /dev/sda1 /dev/nvme0n1; do
    run_common require_device_name "${v}"
    [ "${status}" -eq 0 ] || { echo "rejected ${v}"; false; }
  done
  for v in '' xvda /dev/ /dev/xvda/ /dev/../etc /dev/XVDA '/dev/xvda '; do
    run_common require_device_name "${v}"
    [ "${status}" -eq 2 ] || { echo "accepted ${v}"; false; }
  done
}

@test "require_cidr" {
  for v in 0.0.0.0/0 203.0.113.7/32 10.0.0.0/8 255.255.255.255/32; do
    run_common require_cidr "${v}"
    [ "${status}" -eq 0 ] || { echo "rejected ${v}"; false; }
  done
  for v in '' 203.0.113.7 256.0.0.1/32 1.2.3.4/33 1.2.3/24 ::/0 '1.2.3.4/32 ' \
    1.2.3.4/ a.b.c.d/8 1.2.3.4/032; do
    run_common require_cidr "${v}"
    [ "${status}" -eq 2 ] || { echo "accepted ${v}"; false; }
  done
}

@test "require_sg_name and require_sg_description" {
  for v in ec2-creator-local-ssh 'My group (1): a/b #2 @x +=&;{}!$'; do
    run_common require_sg_name "${v}"
    [ "${status}" -eq 0 ] || { echo "rejected name ${v}"; false; }
  done
  for v in '' -x --dry-run sg-123 file:///etc/passwd 'a*' 'a?' 'a[b]' 'a\b' \
    'a"b' "a'b" 'héllo' $'a\nb' "$(printf 'x%.0s' {1..256})"; do
    run_common require_sg_name "${v}"
    [ "${status}" -eq 2 ] || { echo "accepted name ${v}"; false; }
  done
  run_common require_sg_description 'SSH [ec2-creator-local] *'
  [ "${status}" -eq 0 ]
  for v in '' -x HTTPS://example.com 'a"b' 'a?b' $'a\tb'; do
    run_common require_sg_description "${v}"
    [ "${status}" -eq 2 ] || { echo "accepted description ${v}"; false; }
  done
}

@test "require_text" {
  run_common require_text $'tab\tnew\nline' 1 255 name
  [ "${status}" -eq 0 ]
  run_common require_text '' 1 255 name
  [ "${status}" -eq 2 ]
  run_common require_text "$(printf 'x%.0s' {1..256})" 1 255 name
  [ "${status}" -eq 2 ]
  run_common require_text $'bell\a' 1 255 name
  [ "${status}" -eq 2 ]
}

@test "require_plain_cli_value" {
  run_common require_plain_cli_value 'abc-def' x
  [ "${status}" -eq 0 ]
  for v in -a --dry-run file://x FILEB://x http://x https://x; do
    run_common require_plain_cli_value "${v}" x
    [ "${status}" -eq 2 ] || { echo "accepted ${v}"; false; }
  done
}
