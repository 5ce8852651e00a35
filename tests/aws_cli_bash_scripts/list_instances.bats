#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/list_instances.sh.

load helpers/common
bats_require_minimum_version 1.5.0

MANAGED_FILTER='{"Name":"tag:ManagedBy","Values":["ec2-creator-local"]}'

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script list_instances.sh -h
  assert_help
  run_script list_instances.sh --help
  assert_help
}

@test "no arguments: ManagedBy filter only" {
  run_script list_instances.sh
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances --filters "JSON:[${MANAGED_FILTER}]"
  refute_argv_has --no-paginate
}

@test "--all drops the ManagedBy filter" {
  run_script list_instances.sh --all
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances
}

@test "--request-id adds a RequestId tag filter" {
  run_script list_instances.sh --request-id 'req "1"'
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances \
    --filters "JSON:[${MANAGED_FILTER},{\"Name\":\"tag:RequestId\",\"Values\":[\"req \\\"1\\\"\"]}]"
  run_script list_instances.sh --all --request-id r2
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances \
    --filters 'JSON:[{"Name":"tag:RequestId","Values":["r2"]}]'
}

@test "--request-id is repeatable: one filter with every value" {
  run_script list_instances.sh --all --request-id r1 --request-id r2
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances \
    --filters 'JSON:[{"Name":"tag:RequestId","Values":["r1","r2"]}]'
}

@test "--filter-instance-id looks ids up as a filter (an unknown id is not an error)" {
  run_script list_instances.sh --all --filter-instance-id i-0123456789abcdef0 --filter-instance-id i-12345678
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances \
    --filters 'JSON:[{"Name":"instance-id","Values":["i-0123456789abcdef0","i-12345678"]}]'
  refute_argv_has --instance-ids
  for bad in "" "i-xyz" "--all"; do
    run_script list_instances.sh --filter-instance-id "${bad}"
    assert_usage_error || { echo "accepted: ${bad}"; false; }
  done
}

@test "invalid arguments are usage errors" {
  local -a bad
  for bad in "--instance-id i-12345678" "--filter-instance-id" "--filter-instance-id --all" \
    "--request-id" "--bogus" "extra" "--all --no-paginate"; do
    read -r -a bad <<<"${bad}"
    run_script list_instances.sh "${bad[@]}"
    assert_usage_error || { echo "accepted: ${bad[*]}"; false; }
  done
  run_script list_instances.sh --request-id ""
  assert_usage_error
}

@test "an option-like request id is taken literally" {
  run_script list_instances.sh --request-id --all
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-instances \
    --filters "JSON:[${MANAGED_FILTER},{\"Name\":\"tag:RequestId\",\"Values\":[\"--all\"]}]"
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  run_script list_instances.sh
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5001 run_script list_instances.sh
  assert_argv --output json --cli-connect-timeout 5 --cli-read-timeout 30 \
    --endpoint-url http://127.0.0.1:5001 ec2 describe-instances --filters "JSON:[${MANAGED_FILTER}]"
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (UnauthorizedOperation)" \
    run_script list_instances.sh
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (UnauthorizedOperation)" ]
}
