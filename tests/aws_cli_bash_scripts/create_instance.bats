#!/usr/bin/env bats
# Contract tests for aws_cli_bash_scripts/create_instance.sh.

load helpers/common
bats_require_minimum_version 1.5.0

AMI=ami-0123456789abcdef0

setup() {
  fake_aws_setup
}

# Expected block device mapping JSON for SIZE and DEVICE.
bdm() {
  printf 'JSON:[{"DeviceName":"%s","Ebs":{"VolumeSize":%s,"VolumeType":"gp3","DeleteOnTermination":true}}]' "$2" "$1"
}

# Expected tag specifications JSON for a tags array JSON.
tag_specs() {
  printf 'JSON:[{"ResourceType":"instance","Tags":%s},{"ResourceType":"volume","Tags":%s}]' "$1" "$1"
}

# check_name_tag NAME: the recorded tag specifications carry exactly
# Name=NAME and ManagedBy=ec2-creator-local on the instance and the volume.
check_name_tag() {
  local specs
  specs="$(argv_after --tag-specifications)"
  python3 - "${specs}" "$1" <<'PY'
import json
import sys
specs, name = json.loads(sys.argv[1]), sys.argv[2]
assert [s["ResourceType"] for s in specs] == ["instance", "volume"], specs
for spec in specs:
    assert spec["Tags"] == [
        {"Key": "Name", "Value": name},
        {"Key": "ManagedBy", "Value": "ec2-creator-local"},
    ], (spec["Tags"], name)
PY
}

@test "-h and --help print usage on stdout and exit 0" {
  run_script create_instance.sh -h
  assert_help
  run_script create_instance.sh --help
  assert_help
  run_script create_instance.sh --name x --help
  assert_help
}

@test "no arguments is a usage error" {
  run_script create_instance.sh
  assert_usage_error
}

@test "each required option is required" {
  run_script create_instance.sh --ami "${AMI}" --type t3.micro
  assert_usage_error
  [[ "${stderr}" == *"--name is required"* ]]
  run_script create_instance.sh --name web --type t3.micro
  assert_usage_error
  [[ "${stderr}" == *"--ami is required"* ]]
  run_script create_instance.sh --name web --ami "${AMI}"
  assert_usage_error
  [[ "${stderr}" == *"--type is required"* ]]
}

@test "an option without its value is a usage error" {
  for opt in --name --ami --type --storage-gb --root-device \
    --security-group-id --client-token --request-id; do
    run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro "${opt}"
    assert_usage_error
  done
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --tag onlykey
  assert_usage_error
}

@test "unknown options and stray arguments are usage errors" {
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --dry-run
  assert_usage_error
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro extra
  assert_usage_error
}

@test "invalid values are usage errors" {
  local -a base=(--name web --ami "${AMI}" --type t3.micro)
  local -a bad
  local long_name
  long_name="$(printf 'n%.0s' {1..256})"
  for bad in \
    "--ami ami-xyz" "--ami i-0123456789abcdef0" "--type T3.MICRO" "--type t3" \
    "--storage-gb 0" "--storage-gb 16385" "--storage-gb abc" "--storage-gb -8" \
    "--root-device xvda" "--root-device /dev/../x" "--security-group-id default" \
    "--security-group-id sg-XYZ" "--client-token --dry-run" \
    "--client-token file://x" "--name ${long_name}"; do
    read -r -a bad <<<"${bad}"
    run_script create_instance.sh "${base[@]}" "${bad[@]}"
    assert_usage_error || { echo "accepted: ${bad[*]}"; false; }
  done
}

@test "empty or control-character names and bad client tokens are usage errors" {
  run_script create_instance.sh --name "" --ami "${AMI}" --type t3.micro
  assert_usage_error
  run_script create_instance.sh --name $'bell\a' --ami "${AMI}" --type t3.micro
  assert_usage_error
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --client-token "a b"
  assert_usage_error
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --client-token ""
  assert_usage_error
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro \
    --client-token "$(printf 't%.0s' {1..65})"
  assert_usage_error
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --client-token "jéton"
  assert_usage_error
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --request-id ""
  assert_usage_error
}

@test "reserved, aws: and duplicate tag keys are usage errors" {
  for key in Name ManagedBy RequestId aws:foo AWS:foo Aws:cloudformation:x ""; do
    run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --tag "${key}" v
    assert_usage_error || { echo "accepted key ${key}"; false; }
  done
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro \
    --tag Team a --tag Team b
  assert_usage_error
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro \
    --tag "$(printf 'k%.0s' {1..129})" v
  assert_usage_error
}

@test "minimal call produces exactly the expected run-instances argv" {
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro
  assert_ok_output
  [ "${stderr}" = "" ]
  assert_argv "${GLOBAL_ARGS[@]}" ec2 run-instances \
    --image-id "${AMI}" --instance-type t3.micro --count 1 \
    --key-name my_ec2_keypair \
    --block-device-mappings "$(bdm 8 /dev/xvda)" \
    --tag-specifications "$(tag_specs '[{"Key":"Name","Value":"web"},{"Key":"ManagedBy","Value":"ec2-creator-local"}]')"
}

@test "every option ends up in the argv" {
  run_script create_instance.sh --type t4g.small --ami "${AMI}" --name "my web" \
    --storage-gb 30 --root-device /dev/sda1 \
    --security-group-id sg-0123456789abcdef0 --security-group-id sg-aaaabbbb \
    --tag Team platform --tag cost-center "-42 \"x\"" \
    --client-token "tok-1:ABC_z=" --request-id req-123
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" ec2 run-instances \
    --image-id "${AMI}" --instance-type t4g.small --count 1 \
    --key-name my_ec2_keypair \
    --block-device-mappings "$(bdm 30 /dev/sda1)" \
    --tag-specifications "$(tag_specs '[{"Key":"Name","Value":"my web"},{"Key":"ManagedBy","Value":"ec2-creator-local"},{"Key":"RequestId","Value":"req-123"},{"Key":"Team","Value":"platform"},{"Key":"cost-center","Value":"-42 \"x\""}]')" \
    --security-group-ids sg-0123456789abcdef0 sg-aaaabbbb \
    --client-token "tok-1:ABC_z="
}

@test "--cpu-credits sends the credit specification as JSON; --no-public-ip asks for no public IPv4" {
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --cpu-credits standard --no-public-ip
  assert_ok_output
  [ "$(argv_after --credit-specification)" = '{"CpuCredits":"standard"}' ]
  grep -qx -- --no-associate-public-ip-address "${FAKE_AWS_ARGV}"
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro
  refute_argv_has --credit-specification
  refute_argv_has --no-associate-public-ip-address
  for bad in "" Standard "standard,x" --dry-run; do
    run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --cpu-credits "${bad}"
    assert_usage_error || { echo "accepted --cpu-credits ${bad}"; false; }
  done
}

@test "the free-tier storage policy is the API's: any gp3 size is passed on" {
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --storage-gb 100
  assert_ok_output
  [ "$(argv_after --block-device-mappings)" = '[{"DeviceName":"/dev/xvda","Ebs":{"VolumeSize":100,"VolumeType":"gp3","DeleteOnTermination":true}}]' ]
}

@test "storage size with a leading zero is a plain JSON number" {
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --storage-gb 09
  assert_ok_output
  [ "$(argv_after --block-device-mappings)" = '[{"DeviceName":"/dev/xvda","Ebs":{"VolumeSize":9,"VolumeType":"gp3","DeleteOnTermination":true}}]' ]
}

@test "KEY_NAME sets the key pair (there is no option for it); a malformed one is a usage error" {
  KEY_NAME=from-env run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro
  assert_ok_output
  [ "$(argv_after --key-name)" = "from-env" ]
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro --key-name cli
  assert_usage_error
  for bad in --dry-run file:///etc/passwd a/b; do
    KEY_NAME="${bad}" run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro
    assert_usage_error || { echo "accepted KEY_NAME=${bad}"; false; }
  done
}

@test "hostile names come back as the exact literal Name tag" {
  local marker="${BATS_TEST_TMPDIR}/pwned"
  local name
  for name in \
    'x},{Key=Owner,Value=evil' \
    '--dry-run' \
    "\$(touch ${marker})" \
    "\`touch ${marker}\`" \
    'say "hi" \ and \\ "\"' \
    "it's ; & | > ${marker} < * ?" \
    $'multi\nline\ttab\r' \
    '[{"Key":"ManagedBy","Value":"other"}]' \
    'ünïcödé ✓'; do
    run_script create_instance.sh --name "${name}" --ami "${AMI}" --type t3.micro
    assert_ok_output
    assert_called_once
    check_name_tag "${name}"
    [ ! -e "${marker}" ]
  done
}

@test "option-like values after an option are taken literally" {
  run_script create_instance.sh --name --dry-run --ami "${AMI}" --type t3.micro \
    --tag --endpoint-url --debug
  assert_ok_output
  python3 - "$(argv_after --tag-specifications)" <<'PY'
import json, sys
tags = json.loads(sys.argv[1])[0]["Tags"]
assert tags[0] == {"Key": "Name", "Value": "--dry-run"}, tags
assert tags[2] == {"Key": "--endpoint-url", "Value": "--debug"}, tags
PY
  refute_argv_has --dry-run
  refute_argv_has --endpoint-url
  refute_argv_has --debug
}

@test "--endpoint-url is present iff EC2_ENDPOINT_URL is set" {
  run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro
  refute_argv_has --endpoint-url
  EC2_ENDPOINT_URL=http://127.0.0.1:5000 run_script create_instance.sh \
    --name web --ami "${AMI}" --type t3.micro
  assert_ok_output
  [ "$(argv_after --endpoint-url)" = "http://127.0.0.1:5000" ]
  mapfile -t argv <"${FAKE_AWS_ARGV}"
  [ "${argv[6]}" = "--endpoint-url" ]
  [ "${argv[8]}" = "ec2" ]
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (InvalidAMIID.NotFound)" \
    run_script create_instance.sh --name web --ami "${AMI}" --type t3.micro
  [ "${status}" -eq 254 ]
  [ "${output}" = "" ]
  [ "${stderr}" = "An error occurred (InvalidAMIID.NotFound)" ]
  assert_called_once
}
