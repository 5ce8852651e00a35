#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/describe_default_subnets.sh.

load helpers/common
bats_require_minimum_version 1.5.0

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script describe_default_subnets.sh -h
  assert_help
  run_script describe_default_subnets.sh --help
  assert_help
}

@test "one describe-subnets call with a default-for-az filter" {
  run_script describe_default_subnets.sh
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-subnets \
    --filters 'JSON:[{"Name":"default-for-az","Values":["true"]}]'
  AWS_REGION=eu-west-1 EC2_ENDPOINT_URL=http://127.0.0.1:5006 run_script describe_default_subnets.sh --
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5006 --region eu-west-1 ec2 describe-subnets \
    --filters 'JSON:[{"Name":"default-for-az","Values":["true"]}]'
}

@test "arguments and options are usage errors" {
  for bad in --bogus subnet-12345678 --vpc-id; do
    run_script describe_default_subnets.sh "${bad}"
    assert_usage_error || { echo "accepted ${bad}"; false; }
  done
  assert_not_called
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=255 FAKE_AWS_STDERR="Could not connect to the endpoint URL" run_script describe_default_subnets.sh
  [ "${status}" -eq 255 ]
  [ "${stderr}" = "Could not connect to the endpoint URL" ]
}
