#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/get_account_plan_state.sh.

load helpers/common
bats_require_minimum_version 1.5.0

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script get_account_plan_state.sh -h
  assert_help
  run_script get_account_plan_state.sh --help
  assert_help
}

@test "one freetier get-account-plan-state call in us-east-1, nothing else" {
  run_script get_account_plan_state.sh
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" freetier get-account-plan-state --region us-east-1
  run_script get_account_plan_state.sh --
  assert_ok_output
}

@test "arguments and options are usage errors" {
  for bad in --bogus 123456789012 --profile; do
    run_script get_account_plan_state.sh "${bad}"
    assert_usage_error || { echo "accepted ${bad}"; false; }
  done
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (ExpiredToken)" run_script get_account_plan_state.sh
  [ "${status}" -eq 254 ]
  [ "${stderr}" = "An error occurred (ExpiredToken)" ]
}
