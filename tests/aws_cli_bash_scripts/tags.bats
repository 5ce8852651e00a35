#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/create_tags.sh and delete_tags.sh.

load helpers/common
bats_require_minimum_version 1.5.0

ID=i-0123456789abcdef0

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  for script in create_tags.sh delete_tags.sh; do
    run_script "${script}" -h
    assert_help
    run_script "${script}" --help
    assert_help
  done
}

@test "create_tags: one create-tags call, the tags as JSON" {
  run_script create_tags.sh --instance-id "${ID}" --tag Team platform --tag Env ''
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 create-tags --resources "${ID}" \
    --tags 'JSON:[{"Key":"Team","Value":"platform"},{"Key":"Env","Value":""}]'
}

@test "create_tags: quotes, commas and shell metacharacters stay literal" {
  local value="a\"b\",{Key=x},Value=\$(touch ${BATS_TEST_TMPDIR}/pwned) --dry-run"
  run_script create_tags.sh --instance-id "${ID}" --tag 'k =,' "${value}"
  assert_ok_output
  python3 -c 'import json,sys; assert json.loads(sys.argv[1]) == [{"Key": "k =,", "Value": sys.argv[2]}]' \
    "$(argv_after --tags)" "${value}"
  [ ! -e "${BATS_TEST_TMPDIR}/pwned" ]
}

@test "delete_tags: one delete-tags call, the keys as JSON" {
  run_script delete_tags.sh --instance-id "${ID}" --key Team --key 'a "b"'
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 delete-tags --resources "${ID}" --tags 'JSON:[{"Key":"Team"},{"Key":"a \"b\""}]'
}

@test "bad arguments are usage errors and spawn nothing" {
  run_script create_tags.sh --tag a b
  assert_usage_error
  run_script create_tags.sh --instance-id "${ID}"
  assert_usage_error
  run_script create_tags.sh --instance-id i-xyz --tag a b
  assert_usage_error
  run_script create_tags.sh --instance-id "${ID}" --tag onlykey
  assert_usage_error
  run_script create_tags.sh --instance-id "${ID}" --tag '' v
  assert_usage_error
  run_script create_tags.sh --instance-id "${ID}" --tag k "$(printf 'v%.0s' {1..257})"
  assert_usage_error
  run_script delete_tags.sh --instance-id "${ID}"
  assert_usage_error
  run_script delete_tags.sh --instance-id "${ID}" --key $'a\x01b'
  assert_usage_error
  run_script delete_tags.sh --instance-id "${ID}" --key k extra
  assert_usage_error
  assert_not_called
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (TagLimitExceeded)" \
    run_script create_tags.sh --instance-id "${ID}" --tag a b
  [ "${status}" -eq 254 ]
  [ "${stderr}" = "An error occurred (TagLimitExceeded)" ]
}
