#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/find_security_group.sh.

load helpers/common
bats_require_minimum_version 1.5.0

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script find_security_group.sh -h
  assert_help
  run_script find_security_group.sh --help
  assert_help
}

@test "the name goes into a group-name filter" {
  run_script find_security_group.sh --name ec2-creator-local-ssh
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-security-groups \
    --filters 'JSON:[{"Name":"group-name","Values":["ec2-creator-local-ssh"]}]'
}

@test "a name with spaces and punctuation is passed literally" {
  run_script find_security_group.sh --name 'My SG (web): a/b #1 {x}!$&;=+,@'
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 describe-security-groups \
    --filters 'JSON:[{"Name":"group-name","Values":["My SG (web): a/b #1 {x}!$&;=+,@"]}]'
}

@test "shell metacharacters in the name are passed literally" {
  run_script find_security_group.sh --name "\$(touch ${BATS_TEST_TMPDIR}/pwned) x},{Key=a"
  assert_ok_output
  python3 -c 'import json,sys; assert json.loads(sys.argv[1]) == [{"Name": "group-name", "Values": [sys.argv[2]]}]' \
    "$(argv_after --filters)" "\$(touch ${BATS_TEST_TMPDIR}/pwned) x},{Key=a"
  [ ! -e "${BATS_TEST_TMPDIR}/pwned" ]
}

@test "missing or invalid names are usage errors" {
  run_script find_security_group.sh
  assert_usage_error
  run_script find_security_group.sh --name
  assert_usage_error
  for bad in "" --dry-run 'x"},{"Key":"a' 'ssh*' 'ssh?' '[ab]' 'a"b' 'sg-12345678' \
    "it's" $'a\nb'; do
    run_script find_security_group.sh --name "${bad}"
    assert_usage_error || { echo "accepted ${bad}"; false; }
  done
  run_script find_security_group.sh --name ok extra
  assert_usage_error
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  run_script find_security_group.sh --name web
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5006 run_script find_security_group.sh --name web
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5006 ec2 describe-security-groups \
    --filters 'JSON:[{"Name":"group-name","Values":["web"]}]'
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (RequestExpired)" \
    run_script find_security_group.sh --name web
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (RequestExpired)" ]
}
