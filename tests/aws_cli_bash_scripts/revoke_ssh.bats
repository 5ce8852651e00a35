#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/revoke_ssh.sh.

load helpers/common
bats_require_minimum_version 1.5.0

SG=sg-0123456789abcdef0

setup() {
  fake_aws_setup
}

# Expected --ip-permissions JSON for CIDR.
perms() {
  printf 'JSON:[{"IpProtocol":"tcp","FromPort":22,"ToPort":22,"IpRanges":[{"CidrIp":"%s"}]}]' "$1"
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script revoke_ssh.sh -h
  assert_help
  run_script revoke_ssh.sh --help
  assert_help
}

@test "group id and CIDR produce exactly the expected argv" {
  run_script revoke_ssh.sh --group-id "${SG}" --cidr 203.0.113.7/32
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 revoke-security-group-ingress \
    --group-id "${SG}" --ip-permissions "$(perms 203.0.113.7/32)"
  run_script revoke_ssh.sh --cidr 0.0.0.0/0 --group-id sg-12345678
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 revoke-security-group-ingress \
    --group-id sg-12345678 --ip-permissions "$(perms 0.0.0.0/0)"
}

@test "missing or invalid values are usage errors" {
  local -a bad
  for bad in "" "--group-id ${SG}" "--cidr 10.0.0.0/8" "--group-id --cidr 10.0.0.0/8" \
    "--group-id default --cidr 10.0.0.0/8" "--group-id ${SG} --cidr 10.0.0.1" \
    "--group-id ${SG} --cidr 300.0.0.0/8" "--group-id ${SG} --cidr ::/0" \
    "--group-id ${SG} --cidr 1.2.3.4/40" "--group-id ${SG} --cidr 10.0.0.0/8 --port 23" \
    "--group-id ${SG} --cidr"; do
    read -r -a bad <<<"${bad}"
    run_script revoke_ssh.sh "${bad[@]}"
    assert_usage_error || { echo "accepted: ${bad[*]}"; false; }
  done
  run_script revoke_ssh.sh --group-id "${SG}" --cidr '10.0.0.0/8"},{"CidrIp":"0.0.0.0/0'
  assert_usage_error
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  run_script revoke_ssh.sh --group-id "${SG}" --cidr 10.0.0.0/8
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5008 run_script revoke_ssh.sh --group-id "${SG}" --cidr 10.0.0.0/8
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5008 \
    ec2 revoke-security-group-ingress --group-id "${SG}" --ip-permissions "$(perms 10.0.0.0/8)"
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (InvalidPermission.NotFound)" \
    run_script revoke_ssh.sh --group-id "${SG}" --cidr 10.0.0.0/8
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (InvalidPermission.NotFound)" ]
}
