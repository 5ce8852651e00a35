#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/delete_security_group.sh.

load helpers/common
bats_require_minimum_version 1.5.0

SG=sg-0123456789abcdef0

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script delete_security_group.sh -h
  assert_help
  run_script delete_security_group.sh --help
  assert_help
}

@test "a group id produces exactly the expected argv" {
  run_script delete_security_group.sh --group-id "${SG}"
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 delete-security-group --group-id "${SG}"
}

@test "missing or invalid values are usage errors, and nothing is called" {
  local -a bad
  for bad in "" "--group-id" "--group-id default" "--group-id sg-xyz" "--group-name ec2-creator-local" \
    "--group-id ${SG} --force" "--group-id ${SG},sg-12345678"; do
    read -r -a bad <<<"${bad}"
    run_script delete_security_group.sh "${bad[@]}"
    assert_usage_error || { echo "accepted: ${bad[*]}"; false; }
  done
  assert_not_called
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  run_script delete_security_group.sh --group-id "${SG}"
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5008 run_script delete_security_group.sh --group-id "${SG}"
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5008 ec2 delete-security-group --group-id "${SG}"
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (DependencyViolation)" \
    run_script delete_security_group.sh --group-id "${SG}"
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (DependencyViolation)" ]
}
