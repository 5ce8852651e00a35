#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/get_ssm_parameters.sh.

load helpers/common
bats_require_minimum_version 1.5.0

AL2023=/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64
AL2023_ARM=/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script get_ssm_parameters.sh -h
  assert_help
  run_script get_ssm_parameters.sh --help
  assert_help
}

@test "one or more names produce exactly the expected argv" {
  run_script get_ssm_parameters.sh "${AL2023}"
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ssm get-parameters --names "${AL2023}"
  run_script get_ssm_parameters.sh -- "${AL2023}" "${AL2023_ARM}" \
    /aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ssm get-parameters --names "${AL2023}" "${AL2023_ARM}" \
    /aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id
}

@test "ten names are accepted, eleven are not" {
  local -a names=()
  for i in 1 2 3 4 5 6 7 8 9 10; do
    names+=("/aws/service/x/p${i}")
  done
  run_script get_ssm_parameters.sh "${names[@]}"
  assert_ok_output
  run_script get_ssm_parameters.sh "${names[@]}" /aws/service/x/p11
  assert_usage_error
}

@test "no names, invalid names and options are usage errors" {
  run_script get_ssm_parameters.sh
  assert_usage_error
  run_script get_ssm_parameters.sh --
  assert_usage_error
  for bad in /my/secret /aws/service/ /aws/service/a:b '/aws/service/a b' \
    aws/service/x /aws/service/x/../../y? --with-decryption -x \
    file:///aws/service/x '/aws/service/$(touch x)' $'/aws/service/x\n'; do
    run_script get_ssm_parameters.sh "${bad}"
    assert_usage_error || { echo "accepted ${bad}"; false; }
  done
  run_script get_ssm_parameters.sh "${AL2023}" --with-decryption
  assert_usage_error
}

@test "--endpoint-url (EC2_ENDPOINT_URL) is used for SSM as well" {
  run_script get_ssm_parameters.sh "${AL2023}"
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5004 run_script get_ssm_parameters.sh "${AL2023}"
  assert_argv "${GLOBAL_ARGS[@]}" --endpoint-url http://127.0.0.1:5004 \
    ssm get-parameters --names "${AL2023}"
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (AccessDenied)" \
    run_script get_ssm_parameters.sh "${AL2023}"
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (AccessDenied)" ]
}
