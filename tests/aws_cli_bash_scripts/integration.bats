#!/usr/bin/env bats
# Integration tests: the real scripts, the real AWS CLI, a real moto server
# on a free 127.0.0.1 port. Needs aws and moto_server: $AWS_CLI /
# $MOTO_SERVER, else on PATH. Never reaches AWS: fake credentials, explicit
# endpoint, no metadata service, and a proxy that goes nowhere for anything
# but 127.0.0.1. `make test` runs it with Debian's CLI v2 (AWS_CLI_V2,
# EXPECT_AWS_CLI_MAJOR=2); the venv's v1 runs it too (AWS_CLI unset).

bats_require_minimum_version 1.5.0

AL2023_PARAM=/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64

# http_ok URL: succeed if GET URL answers 2xx (no proxy).
http_ok() {
  python3 - "$1" <<'PY'
import sys
import urllib.request

opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=2) as resp:
        sys.exit(0 if 200 <= resp.status < 300 else 1)
except Exception:
    sys.exit(1)
PY
}

setup_file() {
  local repo_root
  repo_root="$(cd -- "${BATS_TEST_DIRNAME}/../.." && pwd)"
  export SCRIPTS_DIR="${repo_root}/aws_cli_bash_scripts"
  local aws_bin moto_bin
  aws_bin="${AWS_CLI:-$(command -v aws || true)}"
  moto_bin="${MOTO_SERVER:-$(command -v moto_server || true)}"
  if [[ -z "${aws_bin}" || ! -x "${aws_bin}" ]]; then
    echo "integration.bats: aws CLI not found: set AWS_CLI or put it on PATH (pip install awscli)" >&3
    return 1
  fi
  if [[ -z "${moto_bin}" || ! -x "${moto_bin}" ]]; then
    echo "integration.bats: moto_server not found: set MOTO_SERVER or put it on PATH (pip install 'moto[server]')" >&3
    return 1
  fi
  export AWS_CLI="${aws_bin}"
  local version
  version="$("${AWS_CLI}" --version 2>&1)"
  export AWS_CLI_MAJOR="${version#aws-cli/}"
  AWS_CLI_MAJOR="${AWS_CLI_MAJOR%%.*}"
  if [[ -n "${EXPECT_AWS_CLI_MAJOR:-}" && "${AWS_CLI_MAJOR}" != "${EXPECT_AWS_CLI_MAJOR}" ]]; then
    echo "integration.bats: ${AWS_CLI} is '${version}', not CLI v${EXPECT_AWS_CLI_MAJOR}" >&3
    return 1
  fi

  # Guard: this suite can never reach real AWS.
  unset AWS_PROFILE AWS_REGION AWS_ENDPOINT_URL AWS_ENDPOINT_URL_EC2 KEY_NAME
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=
  export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  export HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9
  export NO_PROXY=127.0.0.1,localhost

  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  export EC2_ENDPOINT_URL="http://127.0.0.1:${port}"
  setsid "${moto_bin}" -H 127.0.0.1 -p "${port}" \
    </dev/null >"${BATS_FILE_TMPDIR}/moto.log" 2>&1 3>&- &
  echo "$!" >"${BATS_FILE_TMPDIR}/moto.pid"
  local i
  for ((i = 0; i < 80; i++)); do
    if http_ok "${EC2_ENDPOINT_URL}/moto-api/"; then
      break
    fi
    sleep 0.25
  done
  if ((i == 80)); then
    echo "integration.bats: moto server did not start; log:" >&3
    cat "${BATS_FILE_TMPDIR}/moto.log" >&3
    return 1
  fi
  # The scripts launch with key pair my_ec2_keypair: it must exist.
  "${AWS_CLI}" --endpoint-url "${EC2_ENDPOINT_URL}" ec2 create-key-pair \
    --key-name my_ec2_keypair --query KeyName --output text >/dev/null
  # The AMI the launches use, resolved once (one `aws` process, ~0.5 CPU-s, instead of one per launch); the
  # first test resolves it through the script again and checks it.
  AL2023_AMI="$(al2023_ami)"
  export AL2023_AMI
}

teardown_file() {
  local pid
  pid="$(cat "${BATS_FILE_TMPDIR}/moto.pid" 2>/dev/null || true)"
  if [[ "${pid}" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q moto_server; then
    kill "${pid}" 2>/dev/null || true
  fi
}

# jq-less JSON query: py EXPR < JSON. EXPR sees the document as `d`.
py() {
  python3 -c "import json, sys; d = json.load(sys.stdin); r = ($1); print(r if isinstance(r, str) else json.dumps(r))"
}

# al2023_ami: print the al2023 x86_64 AMI id the emulator publishes.
al2023_ami() {
  "${SCRIPTS_DIR}/get_ssm_parameters.sh" "${AL2023_PARAM}" | py 'd["Parameters"][0]["Value"]'
}

# launch NAME [ARGS...]: create_instance.sh with the al2023 AMI and t3.micro;
# print the instance id.
launch() {
  local name="$1"
  shift
  "${SCRIPTS_DIR}/create_instance.sh" --name "${name}" --ami "${AL2023_AMI}" --type t3.micro "$@" \
    | py 'd["Instances"][0]["InstanceId"]'
}

# listed_ids [ARGS...]: instance ids printed by list_instances.sh ARGS.
listed_ids() {
  "${SCRIPTS_DIR}/list_instances.sh" "$@" \
    | py '" ".join(sorted(i["InstanceId"] for r in d["Reservations"] for i in r["Instances"]))'
}

# state ID: the instance state name as seen by describe-instances.
state() {
  "${SCRIPTS_DIR}/list_instances.sh" --all --filter-instance-id "$1" \
    | py 'd["Reservations"][0]["Instances"][0]["State"]["Name"]'
}

@test "the al2023 AMI resolves via SSM and describe_images finds it" {
  run al2023_ami
  [ "${status}" -eq 0 ]
  [[ "${output}" =~ ^ami-[0-9a-f]{8,17}$ ]]
  [ "${output}" = "${AL2023_AMI}" ]
  local ami="${output}"
  run "${SCRIPTS_DIR}/describe_images.sh" "${ami}" ami-00000000deadbeef
  [ "${status}" -eq 0 ]
  [ "$(py '[i["ImageId"] for i in d["Images"]]' <<<"${output}")" = "[\"${ami}\"]" ]
}

@test "describe_instance_types lists the free-tier types" {
  run "${SCRIPTS_DIR}/describe_instance_types.sh"
  [ "${status}" -eq 0 ]
  local types
  types="$(py '" ".join(sorted(t["InstanceType"] for t in d["InstanceTypes"]))' <<<"${output}")"
  [[ " ${types} " == *" t3.micro "* ]]
  [[ " ${types} " != *" m5.large "* ]]
}

@test "create_instance launches a tagged instance with a gp3 root volume" {
  local name='web "one" x},{Key=Owner,Value=evil --dry-run $(touch /tmp/pwned-ec2cl)'
  run --separate-stderr "${SCRIPTS_DIR}/create_instance.sh" --name "${name}" --ami "${AL2023_AMI}" \
    --type t3.micro --storage-gb 10 --tag Team platform --request-id req-int-1
  [ "${status}" -eq 0 ]
  local doc="${output}" id
  id="$(py 'd["Instances"][0]["InstanceId"]' <<<"${doc}")"
  [[ "${id}" =~ ^i-[0-9a-f]{8,17}$ ]]
  [ "$(py 'd["Instances"][0]["KeyName"]' <<<"${doc}")" = "my_ec2_keypair" ]
  [ "$(py 'd["Instances"][0]["InstanceType"]' <<<"${doc}")" = "t3.micro" ]
  run py '{t["Key"]: t["Value"] for t in d["Reservations"][0]["Instances"][0]["Tags"]}' \
    < <("${SCRIPTS_DIR}/list_instances.sh" --filter-instance-id "${id}")
  python3 -c 'import json, sys; t = json.loads(sys.argv[1]); assert t == {"Name": sys.argv[2], "ManagedBy": "ec2-creator-local", "RequestId": "req-int-1", "Team": "platform"}, t' \
    "${output}" "${name}"
  [ ! -e /tmp/pwned-ec2cl ]
  # The root volume: gp3, 10 GiB, tagged too.
  run "${AWS_CLI}" --endpoint-url "${EC2_ENDPOINT_URL}" --output json ec2 describe-volumes \
    --filters "[{\"Name\":\"attachment.instance-id\",\"Values\":[\"${id}\"]}]"
  [ "${status}" -eq 0 ]
  [ "$(py '[(v["Size"], v["VolumeType"]) for v in d["Volumes"]]' <<<"${output}")" = '[[10, "gp3"]]' ]
  [ "$(py '{t["Key"]: t["Value"] for t in d["Volumes"][0]["Tags"]}["ManagedBy"]' <<<"${output}")" = "ec2-creator-local" ]
}

@test "list_instances finds managed instances only, unless --all" {
  local managed unmanaged
  managed="$(launch "listed" --request-id req-list-1)"
  unmanaged="$("${AWS_CLI}" --endpoint-url "${EC2_ENDPOINT_URL}" --output text ec2 run-instances \
    --image-id "${AL2023_AMI}" --instance-type t3.micro --count 1 --query 'Instances[0].InstanceId')"
  [[ "${unmanaged}" =~ ^i- ]]
  run listed_ids
  [ "${status}" -eq 0 ]
  [[ " ${output} " == *" ${managed} "* ]]
  [[ " ${output} " != *" ${unmanaged} "* ]]
  run listed_ids --all
  [[ " ${output} " == *" ${managed} "* ]]
  [[ " ${output} " == *" ${unmanaged} "* ]]
  run listed_ids --request-id req-list-1
  [ "${output}" = "${managed}" ]
  run listed_ids --request-id no-such-request
  [ "${output}" = "" ]
  run listed_ids --filter-instance-id "${unmanaged}"
  [ "${output}" = "" ]
}

@test "stop, start and destroy move the instance through its states" {
  local id
  id="$(launch "lifecycle")"
  [ "$(state "${id}")" = "running" ]

  run --separate-stderr "${SCRIPTS_DIR}/stop_instance.sh" "${id}"
  [ "${status}" -eq 0 ]
  [ "$(py 'd["StoppingInstances"][0]["InstanceId"]' <<<"${output}")" = "${id}" ]
  [ "$(state "${id}")" = "stopped" ]

  run --separate-stderr "${SCRIPTS_DIR}/start_instance.sh" -- "${id}"
  [ "${status}" -eq 0 ]
  [ "$(py 'd["StartingInstances"][0]["InstanceId"]' <<<"${output}")" = "${id}" ]
  [ "$(state "${id}")" = "running" ]

  run --separate-stderr "${SCRIPTS_DIR}/destroy_instance.sh" "${id}"
  [ "${status}" -eq 0 ]
  [ "$(py 'd["TerminatingInstances"][0]["InstanceId"]' <<<"${output}")" = "${id}" ]
  [ "$(state "${id}")" = "terminated" ]
}

@test "an AWS error is passed through with the CLI exit code and message" {
  run --separate-stderr "${SCRIPTS_DIR}/start_instance.sh" i-0123456789abcdef0
  # An AWS error: CLI v1 exits 255, v2 254.
  if ((AWS_CLI_MAJOR == 2)); then [ "${status}" -eq 254 ]; else [ "${status}" -eq 255 ]; fi
  [ "${output}" = "" ]
  [[ "${stderr}" == *InvalidInstanceID.NotFound* ]]
}

@test "security group scripts: find, create, authorize SSH, launch into it" {
  local name="ec2-creator-local-it" sg
  run --separate-stderr "${SCRIPTS_DIR}/find_security_group.sh" --name "${name}"
  [ "${status}" -eq 0 ]
  [ "$(py 'len(d["SecurityGroups"])' <<<"${output}")" = "0" ]

  run --separate-stderr "${SCRIPTS_DIR}/create_security_group.sh" --name "${name}" \
    --description "SSH access for instances made by ec2-creator-local"
  [ "${status}" -eq 0 ]
  sg="$(py 'd["GroupId"]' <<<"${output}")"
  [[ "${sg}" =~ ^sg-[0-9a-f]{8,17}$ ]]

  run --separate-stderr "${SCRIPTS_DIR}/find_security_group.sh" --name "${name}"
  [ "${status}" -eq 0 ]
  [ "$(py '[g["GroupId"] for g in d["SecurityGroups"]]' <<<"${output}")" = "[\"${sg}\"]" ]
  [ "$(py '{t["Key"]: t["Value"] for t in d["SecurityGroups"][0]["Tags"]}' <<<"${output}")" = '{"ManagedBy": "ec2-creator-local"}' ]

  run --separate-stderr "${SCRIPTS_DIR}/authorize_ssh.sh" --group-id "${sg}" --cidr 203.0.113.7/32
  [ "${status}" -eq 0 ]
  run --separate-stderr "${SCRIPTS_DIR}/find_security_group.sh" --name "${name}"
  [ "$(py '[(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in d["SecurityGroups"][0]["IpPermissions"]]' <<<"${output}")" = '[["tcp", 22, 22, ["203.0.113.7/32"]]]' ]

  run --separate-stderr "${SCRIPTS_DIR}/authorize_ssh.sh" --group-id "${sg}" --cidr 203.0.113.7/32
  [ "${status}" -ne 0 ]
  [[ "${stderr}" == *InvalidPermission.Duplicate* ]]

  local id
  id="$(launch "with-sg" --security-group-id "${sg}")"
  run "${SCRIPTS_DIR}/list_instances.sh" --filter-instance-id "${id}"
  [ "$(py '[g["GroupId"] for g in d["Reservations"][0]["Instances"][0]["SecurityGroups"]]' <<<"${output}")" = "[\"${sg}\"]" ]
}

@test "get_caller_identity names the emulator's account" {
  run --separate-stderr "${SCRIPTS_DIR}/get_caller_identity.sh"
  [ "${status}" -eq 0 ]
  [[ "$(py 'd["Account"]' <<<"${output}")" =~ ^[0-9]{12}$ ]]
  [[ "$(py 'd["Arn"]' <<<"${output}")" == arn:aws:* ]]
}

@test "describe_key_pairs finds my_ec2_keypair, and nothing for a missing name" {
  run --separate-stderr "${SCRIPTS_DIR}/describe_key_pairs.sh" --key-name my_ec2_keypair
  [ "${status}" -eq 0 ]
  [ "$(py '[k["KeyName"] for k in d["KeyPairs"]]' <<<"${output}")" = '["my_ec2_keypair"]' ]
  run --separate-stderr "${SCRIPTS_DIR}/describe_key_pairs.sh" --key-name no-such-key
  [ "${status}" -eq 0 ]
  [ "$(py 'd["KeyPairs"]' <<<"${output}")" = '[]' ]
}

@test "describe_default_subnets lists the default VPC's subnets" {
  run --separate-stderr "${SCRIPTS_DIR}/describe_default_subnets.sh"
  [ "${status}" -eq 0 ]
  [ "$(py 'len({s["VpcId"] for s in d["Subnets"]})' <<<"${output}")" = 1 ]
  [ "$(py 'bool(d["Subnets"]) and all(s["DefaultForAz"] for s in d["Subnets"])' <<<"${output}")" = true ]
}

@test "list_instances follows every page: the CLI's pagination, forced to pages of 2" {
  launch "page-1" >/dev/null
  launch "page-2" >/dev/null
  launch "page-3" >/dev/null
  local wrapper="${BATS_TEST_TMPDIR}/aws-paged"
  printf '#!/usr/bin/env bash\nexec %q "$@" --page-size 2\n' "${AWS_CLI}" >"${wrapper}"
  chmod +x "${wrapper}"
  local whole paged
  whole="$(listed_ids --all)"
  paged="$(AWS_CLI="${wrapper}" listed_ids --all)"
  [ "$(wc -w <<<"${whole}")" -ge 3 ]
  [ "${paged}" = "${whole}" ]
  # More than one page: cut at 2 items, the CLI hands back a NextToken to resume from.
  run "${wrapper}" --endpoint-url "${EC2_ENDPOINT_URL}" --output json ec2 describe-instances --max-items 2
  [ "$(py '"NextToken" in d' <<<"${output}")" = true ]
}

@test "create_tags and delete_tags change what list_instances shows" {
  local id
  id="$(launch "tagged")"
  run --separate-stderr "${SCRIPTS_DIR}/create_tags.sh" --instance-id "${id}" --tag Team platform --tag Env dev
  [ "${status}" -eq 0 ]
  run --separate-stderr "${SCRIPTS_DIR}/delete_tags.sh" --instance-id "${id}" --key Env
  [ "${status}" -eq 0 ]
  run py '{t["Key"]: t["Value"] for t in d["Reservations"][0]["Instances"][0]["Tags"]}' \
    < <("${SCRIPTS_DIR}/list_instances.sh" --filter-instance-id "${id}")
  python3 -c 'import json, sys; t = json.loads(sys.argv[1]); assert t.get("Team") == "platform" and "Env" not in t, t' \
    "${output}"
}

@test "CloudWatch: datapoints come back; the idle alarm is put, listed and deleted" {
  local id now
  id="$(launch "watched")"
  now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  "${AWS_CLI}" --endpoint-url "${EC2_ENDPOINT_URL}" cloudwatch put-metric-data --namespace AWS/EC2 \
    --metric-data "[{\"MetricName\":\"CPUUtilization\",\"Dimensions\":[{\"Name\":\"InstanceId\",\"Value\":\"${id}\"}],\"Timestamp\":\"${now}\",\"Value\":42.5}]"
  run --separate-stderr "${SCRIPTS_DIR}/get_metric_statistics.sh" --instance-id "${id}" --metric CPUUtilization \
    --start "$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)" --end "$(date -u -d '+5 min' +%Y-%m-%dT%H:%M:%SZ)" --period 300
  [ "${status}" -eq 0 ]
  [ "$(py '[p["Average"] for p in d["Datapoints"]]' <<<"${output}")" = "[42.5]" ]

  AWS_REGION=us-east-1 run --separate-stderr "${SCRIPTS_DIR}/put_idle_stop_alarm.sh" --instance-id "${id}" \
    --alarm-name "idle-${id}" --cpu-below 3 --minutes 15
  [ "${status}" -eq 0 ]
  run --separate-stderr "${SCRIPTS_DIR}/describe_alarms.sh" --prefix "idle-${id}"
  [ "${status}" -eq 0 ]
  [ "$(py '[(a["Dimensions"], a["Threshold"], a["EvaluationPeriods"], a["AlarmActions"]) for a in d["MetricAlarms"]]' \
    <<<"${output}")" = "[[[{\"Name\": \"InstanceId\", \"Value\": \"${id}\"}], 3.0, 3, [\"arn:aws:automate:us-east-1:ec2:stop\"]]]" ]
  run --separate-stderr "${SCRIPTS_DIR}/delete_alarms.sh" --alarm-name "idle-${id}"
  [ "${status}" -eq 0 ]
  run --separate-stderr "${SCRIPTS_DIR}/describe_alarms.sh" --prefix "idle-${id}"
  [ "$(py 'len(d["MetricAlarms"])' <<<"${output}")" = 0 ]
}
