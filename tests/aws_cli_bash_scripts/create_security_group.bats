#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/create_security_group.sh.

load helpers/common
bats_require_minimum_version 1.5.0

TAG_SPECS='JSON:[{"ResourceType":"security-group","Tags":[{"Key":"ManagedBy","Value":"ec2-creator-local"}]}]'

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script create_security_group.sh -h
  assert_help
  run_script create_security_group.sh --help
  assert_help
}

@test "name with the default description" {
  run_script create_security_group.sh --name ec2-creator-local-ssh
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 create-security-group \
    --group-name ec2-creator-local-ssh \
    --description "Managed by ec2-creator-local" \
    --tag-specifications "${TAG_SPECS}"
}

@test "name and description" {
  run_script create_security_group.sh --description 'SSH [admin] *only* (v1)' --name 'my sg: 1'
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 create-security-group \
    --group-name 'my sg: 1' \
    --description 'SSH [admin] *only* (v1)' \
    --tag-specifications "${TAG_SPECS}"
}

@test "--request-id adds a RequestId tag (the launch the group is made for)" {
  run_script create_security_group.sh --name ec2-creator-local-abc --request-id 0f3a-b9
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 create-security-group \
    --group-name ec2-creator-local-abc \
    --description "Managed by ec2-creator-local" \
    --tag-specifications 'JSON:[{"ResourceType":"security-group","Tags":[{"Key":"ManagedBy","Value":"ec2-creator-local"},{"Key":"RequestId","Value":"0f3a-b9"}]}]'
  for bad in "" -x "a b" 'a"b' "$(printf 'r%.0s' {1..65})"; do
    run_script create_security_group.sh --name ok --request-id "${bad}"
    assert_usage_error || { echo "accepted request id ${bad}"; false; }
  done
  run_script create_security_group.sh --name ok --request-id
  assert_usage_error
}

@test "shell metacharacters in the name are passed literally" {
  run_script create_security_group.sh --name "\$(touch ${BATS_TEST_TMPDIR}/pwned); x},{Key=a"
  assert_ok_output
  [ "$(argv_after --group-name)" = "\$(touch ${BATS_TEST_TMPDIR}/pwned); x},{Key=a" ]
  [ ! -e "${BATS_TEST_TMPDIR}/pwned" ]
}

@test "missing or invalid values are usage errors" {
  run_script create_security_group.sh
  assert_usage_error
  run_script create_security_group.sh --name
  assert_usage_error
  run_script create_security_group.sh --name ok --description
  assert_usage_error
  for bad in "" --dry-run -x sg-web SG-web file:///etc/passwd https://x 'a*' 'a"b' \
    "a'b" "$(printf 'n%.0s' {1..256})"; do
    run_script create_security_group.sh --name "${bad}"
    assert_usage_error || { echo "accepted name ${bad}"; false; }
  done
  for bad in "" --vpc-id http://169.254.169.254/ 'quote"' 'what?' $'a\tb'; do
    run_script create_security_group.sh --name ok --description "${bad}"
    assert_usage_error || { echo "accepted description ${bad}"; false; }
  done
  run_script create_security_group.sh --name ok --vpc-id vpc-12345678
  assert_usage_error
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  run_script create_security_group.sh --name web
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5007 run_script create_security_group.sh --name web
  [ "$(argv_after --endpoint-url)" = "http://127.0.0.1:5007" ]
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (InvalidGroup.Duplicate)" \
    run_script create_security_group.sh --name web
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (InvalidGroup.Duplicate)" ]
}
