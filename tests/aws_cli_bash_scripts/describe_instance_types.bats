#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/describe_instance_types.sh.

load helpers/common
bats_require_minimum_version 1.5.0

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script describe_instance_types.sh -h
  assert_help
  run_script describe_instance_types.sh --help
  assert_help
}

@test "default: free-tier-eligible filter" {
  run_script describe_instance_types.sh
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instance-types \
    --filters 'JSON:[{"Name":"free-tier-eligible","Values":["true"]}]'
}

@test "unexpected arguments are usage errors" {
  for bad in --bogus t3.micro --filters -a --all ""; do
    run_script describe_instance_types.sh "${bad}"
    assert_usage_error || { echo "accepted ${bad}"; false; }
  done
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  run_script describe_instance_types.sh
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5003 run_script describe_instance_types.sh
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5003 ec2 describe-instance-types \
    --filters 'JSON:[{"Name":"free-tier-eligible","Values":["true"]}]'
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=253 FAKE_AWS_STDERR="Unable to locate credentials" \
    run_script describe_instance_types.sh
  [ "${status}" -eq 253 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "Unable to locate credentials" ]
}
