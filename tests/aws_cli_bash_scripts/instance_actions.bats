#!/usr/bin/env bats
# Contract tests for the instance action scripts: start_instance.sh, stop_instance.sh and
# destroy_instance.sh share their CLI (common.sh's instance_action_main); each test runs all three.

load helpers/common
bats_require_minimum_version 1.5.0

ACTIONS=(
  "start_instance.sh start-instances"
  "stop_instance.sh stop-instances"
  "destroy_instance.sh terminate-instances"
)

setup() {
  fake_aws_setup
}

# for_each_action TEST_FUNCTION: run it with SCRIPT and OPERATION set for every script, on a fresh
# fake CLI record each time. Called plainly (not under || or if) so errexit stops at the first
# failing check; the last "checking" line printed names the script.
for_each_action() {
  local pair
  for pair in "${ACTIONS[@]}"; do
    read -r SCRIPT OPERATION <<<"${pair}"
    echo "checking ${SCRIPT}"
    rm -f -- "${FAKE_AWS_ARGV}" "${FAKE_AWS_ARGV}.calls"
    "$1"
  done
}

check_h_and_help_print_usage_on_stdout_and_exit_0() {
  run_script "${SCRIPT}" -h
  assert_help
  run_script "${SCRIPT}" --help
  assert_help
}

@test "-h and --help print usage on stdout and exit 0" {
  for_each_action check_h_and_help_print_usage_on_stdout_and_exit_0
}

check_a_valid_id_produces_exactly_the_expected_argv() {
  run_script "${SCRIPT}" i-0123456789abcdef0
  assert_ok_output
  [ "${stderr}" = "" ]
  assert_argv "${GLOBAL_ARGS[@]}" ec2 "${OPERATION}" --instance-ids i-0123456789abcdef0
}

@test "a valid id produces exactly the expected argv" {
  for_each_action check_a_valid_id_produces_exactly_the_expected_argv
}

check_several_ids_go_in_one_call() {
  run_script "${SCRIPT}" i-0123456789abcdef0 i-12345678 -- i-87654321
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 "${OPERATION}" --instance-ids i-0123456789abcdef0 i-12345678 i-87654321
  local -a many=()
  local i
  for ((i = 0; i < 1001; i++)); do
    many+=("$(printf 'i-%08x' "${i}")")
  done
  run_script "${SCRIPT}" "${many[@]:0:1000}"
  assert_ok_output
  run_script "${SCRIPT}" "${many[@]}"
  assert_usage_error
}

@test "several ids go in one call (up to 1,000)" {
  for_each_action check_several_ids_go_in_one_call
}

check_before_the_id_is_allowed() {
  run_script "${SCRIPT}" -- i-12345678
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 "${OPERATION}" --instance-ids i-12345678
}

@test "-- before the id is allowed" {
  for_each_action check_before_the_id_is_allowed
}

check_missing_extra_or_invalid_ids_are_usage_errors() {
  local -a bad
  for bad in "" "i-12345678 i-12345678" "i-12345678 i-xyz" "i-xyz" "ami-12345678" "--dry-run" \
    "-- --dry-run" "-- i-12345678 --dry-run" "--force i-12345678" "I-12345678" "--"; do
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

@test "missing, extra or invalid ids are usage errors" {
  for_each_action check_missing_extra_or_invalid_ids_are_usage_errors
}

check_endpoint_url_is_present_iff_ec2_endpoint_url_is_set() {
  run_script "${SCRIPT}" i-12345678
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5002 run_script "${SCRIPT}" i-12345678
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5002 \
    ec2 "${OPERATION}" --instance-ids i-12345678
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  for_each_action check_endpoint_url_is_present_iff_ec2_endpoint_url_is_set
}

check_the_cli_exit_code_and_stderr_are_passed_through() {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (InvalidInstanceID.NotFound)" \
    run_script "${SCRIPT}" i-12345678
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (InvalidInstanceID.NotFound)" ]
  assert_called_once
}

@test "the CLI exit code and stderr are passed through" {
  for_each_action check_the_cli_exit_code_and_stderr_are_passed_through
}
