#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/describe_key_pairs.sh.

load helpers/common
bats_require_minimum_version 1.5.0

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script describe_key_pairs.sh -h
  assert_help
  run_script describe_key_pairs.sh --help
  assert_help
}

@test "the name goes into a key-name filter, as JSON" {
  run_script describe_key_pairs.sh --key-name my_ec2_keypair
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-key-pairs \
    --filters 'JSON:[{"Name":"key-name","Values":["my_ec2_keypair"]}]'
}

@test "quotes, spaces and shell metacharacters in the name are passed literally" {
  local name="a \"b\" \$(touch ${BATS_TEST_TMPDIR}/pwned) --dry-run"
  run_script describe_key_pairs.sh --key-name "${name}"
  assert_ok_output
  python3 -c 'import json,sys; assert json.loads(sys.argv[1]) == [{"Name": "key-name", "Values": [sys.argv[2]]}]' \
    "$(argv_after --filters)" "${name}"
  [ ! -e "${BATS_TEST_TMPDIR}/pwned" ]
}

@test "a missing, empty, too long or control-character name is a usage error" {
  run_script describe_key_pairs.sh
  assert_usage_error
  run_script describe_key_pairs.sh --key-name
  assert_usage_error
  for bad in "" "$(printf 'k%.0s' {1..256})" $'a\x01b'; do
    run_script describe_key_pairs.sh --key-name "${bad}"
    assert_usage_error || { echo "accepted ${bad}"; false; }
  done
  run_script describe_key_pairs.sh --key-name ok extra
  assert_usage_error
  assert_not_called
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (UnauthorizedOperation)" \
    run_script describe_key_pairs.sh --key-name k
  [ "${status}" -eq 254 ]
  [ "${stderr}" = "An error occurred (UnauthorizedOperation)" ]
}
