#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/stop_instance.sh.

load helpers/common
bats_require_minimum_version 1.5.0

SCRIPT=stop_instance.sh
OPERATION=stop-instances

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script "${SCRIPT}" -h
  assert_help
  run_script "${SCRIPT}" --help
  assert_help
}

@test "a valid id produces exactly the expected argv" {
  run_script "${SCRIPT}" i-0123456789abcdef0
  assert_ok_output
  [ "${stderr}" = "" ]
  assert_argv "${GLOBAL_ARGS[@]}" ec2 "${OPERATION}" --instance-ids i-0123456789abcdef0
}

@test "-- before the id is allowed" {
  run_script "${SCRIPT}" -- i-12345678
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 "${OPERATION}" --instance-ids i-12345678
}

@test "missing, extra or invalid ids are usage errors" {
  local -a bad
  for bad in "" "i-12345678 i-87654321" "i-xyz" "ami-12345678" "--dry-run" \
    "-- --dry-run" "-- i-12345678 i-87654321" "--force i-12345678" "I-12345678" "--"; do
    read -r -a bad <<<"${bad}"
    run_script "${SCRIPT}" "${bad[@]}"
    assert_usage_error || { echo "accepted: ${bad[*]}"; false; }
  done
  run_script "${SCRIPT}" ""
  assert_usage_error
  run_script "${SCRIPT}" "i-12345678 "
  assert_usage_error
  run_script "${SCRIPT}" '$(touch ${BATS_TEST_TMPDIR}/pwned)'
  assert_usage_error
  [ ! -e "${BATS_TEST_TMPDIR}/pwned" ]
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  run_script "${SCRIPT}" i-12345678
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5002 run_script "${SCRIPT}" i-12345678
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5002 \
    ec2 "${OPERATION}" --instance-ids i-12345678
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (InvalidInstanceID.NotFound)" \
    run_script "${SCRIPT}" i-12345678
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (InvalidInstanceID.NotFound)" ]
  assert_called_once
}
