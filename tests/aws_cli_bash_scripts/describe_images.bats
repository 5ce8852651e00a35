#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/describe_images.sh.

load helpers/common
bats_require_minimum_version 1.5.0

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script describe_images.sh -h
  assert_help
  run_script describe_images.sh --help
  assert_help
}

@test "ids go into an image-id filter, not --image-ids" {
  run_script describe_images.sh ami-0123456789abcdef0
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-images \
    --filters 'JSON:[{"Name":"image-id","Values":["ami-0123456789abcdef0"]}]'
  run_script describe_images.sh -- ami-12345678 ami-87654321
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-images \
    --filters 'JSON:[{"Name":"image-id","Values":["ami-12345678","ami-87654321"]}]'
  refute_argv_has --image-ids
}

@test "100 ids are accepted, 101 are not" {
  local -a ids=()
  for i in $(seq 10000000 10000099); do
    ids+=("ami-${i}")
  done
  run_script describe_images.sh "${ids[@]}"
  assert_ok_output
  run_script describe_images.sh "${ids[@]}" ami-aaaaaaaa
  assert_usage_error
}

@test "no ids and invalid ids are usage errors" {
  run_script describe_images.sh
  assert_usage_error
  for bad in ami-xyz i-12345678 --owners -x "ami-12345678,ami-87654321" '*'; do
    run_script describe_images.sh "${bad}"
    assert_usage_error || { echo "accepted ${bad}"; false; }
  done
  run_script describe_images.sh ami-12345678 --owners
  assert_usage_error
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  run_script describe_images.sh ami-12345678
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5005 run_script describe_images.sh ami-12345678
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5005 ec2 describe-images \
    --filters 'JSON:[{"Name":"image-id","Values":["ami-12345678"]}]'
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=255 FAKE_AWS_STDERR="Could not connect to the endpoint URL" \
    run_script describe_images.sh ami-12345678
  [ "${status}" -eq 255 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "Could not connect to the endpoint URL" ]
}
