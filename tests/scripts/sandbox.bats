#!/usr/bin/env bats
# Tests for scripts/sandbox.sh against a real moto server on a free port.
# Needs moto_server and aws: $MOTO_SERVER / $AWS_CLI, else on PATH.

bats_require_minimum_version 1.5.0

# free_port: print a TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

setup_file() {
  REPO_ROOT="$(cd -- "${BATS_TEST_DIRNAME}/../.." && pwd)"
  export SANDBOX="${REPO_ROOT}/scripts/sandbox.sh"
  MOTO_SERVER="${MOTO_SERVER:-$(command -v moto_server || true)}"
  AWS_CLI="${AWS_CLI:-$(command -v aws || true)}"
  if [[ -z "${MOTO_SERVER}" || ! -x "${MOTO_SERVER}" ]]; then
    echo "moto_server not found: set MOTO_SERVER or put it on PATH (pip install 'moto[server]')" >&3
    return 1
  fi
  if [[ -z "${AWS_CLI}" || ! -x "${AWS_CLI}" ]]; then
    echo "aws CLI not found: set AWS_CLI or put it on PATH (pip install awscli)" >&3
    return 1
  fi
  export MOTO_SERVER AWS_CLI
  # Guard: fake credentials, no metadata service, no way out but 127.0.0.1.
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=
  export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  export HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9
  export NO_PROXY=127.0.0.1,localhost
  unset AWS_PROFILE AWS_REGION SANDBOX_HOST KEY_NAME
  SANDBOX_PORT="$(free_port)"
  export SANDBOX_PORT
  export SANDBOX_DIR="${BATS_FILE_TMPDIR}/sandbox"
  export SANDBOX_URL="http://127.0.0.1:${SANDBOX_PORT}"
}

teardown_file() {
  "${SANDBOX}" stop >/dev/null 2>&1 || true
}

@test "-h prints usage and exits 0; bad commands exit 2" {
  run --separate-stderr "${SANDBOX}" -h
  [ "${status}" -eq 0 ]
  [[ "${output}" == Usage:* ]]
  run --separate-stderr "${SANDBOX}"
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == *Usage:* ]]
  run --separate-stderr "${SANDBOX}" restart
  [ "${status}" -eq 2 ]
  run --separate-stderr "${SANDBOX}" start now
  [ "${status}" -eq 2 ]
}

@test "a host other than 127.0.0.1 or a bad port is refused" {
  for host in 0.0.0.0 localhost 10.0.0.1 '127.0.0.1 '; do
    SANDBOX_HOST="${host}" run --separate-stderr "${SANDBOX}" start
    [ "${status}" -eq 1 ]
    [[ "${stderr}" == *"SANDBOX_HOST must be 127.0.0.1"* ]]
  done
  for port in 0 65536 abc '5000;id'; do
    SANDBOX_PORT="${port}" run --separate-stderr "${SANDBOX}" url
    [ "${status}" -eq 1 ]
  done
  [ ! -e "${SANDBOX_DIR}" ]
}

@test "url prints the emulator URL" {
  run "${SANDBOX}" url
  [ "${status}" -eq 0 ]
  [ "${output}" = "${SANDBOX_URL}" ]
}

@test "status is 3 before start" {
  run "${SANDBOX}" status
  [ "${status}" -eq 3 ]
}

@test "start with a missing moto_server fails cleanly" {
  MOTO_SERVER=/nonexistent/moto_server run --separate-stderr "${SANDBOX}" start
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"moto_server not found"* ]]
  [ ! -e "${SANDBOX_DIR}/moto.pid" ]
}

@test "start launches the server and creates the key pair" {
  run --separate-stderr "${SANDBOX}" start
  echo "stdout: ${output}"
  echo "stderr: ${stderr}"
  [ "${status}" -eq 0 ]
  [ "${lines[${#lines[@]} - 1]}" = "sandbox: moto server at ${SANDBOX_URL} (key pair my_ec2_keypair ready)" ]
  [ -s "${SANDBOX_DIR}/moto.pid" ]
  [[ "$(cat "${SANDBOX_DIR}/moto.pid")" =~ ^[0-9]+\ [0-9]+$ ]]  # pid and start time
  [[ "$(tr '\0' ' ' <"/proc/$(cut -d' ' -f1 "${SANDBOX_DIR}/moto.pid")/cmdline")" == *moto_server* ]]
  [ -f "${SANDBOX_DIR}/moto.log" ]
  [ "$(stat -c '%a' "${SANDBOX_DIR}/moto.log")" = 600 ]
  [ "$(stat -c '%a' "${SANDBOX_DIR}/moto.pid")" = 600 ]
}

@test "status is 0 while running" {
  run "${SANDBOX}" status
  [ "${status}" -eq 0 ]
}

@test "the key pair exists in the emulator and its private key is mode 600" {
  run "${AWS_CLI}" --endpoint-url "${SANDBOX_URL}" --output text \
    ec2 describe-key-pairs --key-names my_ec2_keypair --query 'KeyPairs[0].KeyName'
  [ "${status}" -eq 0 ]
  [ "${output}" = "my_ec2_keypair" ]
  local pem="${SANDBOX_DIR}/my_ec2_keypair.pem"
  [ -f "${pem}" ]
  [ "$(stat -c '%a' "${pem}")" = "600" ]
  [[ "$(head -n 1 "${pem}")" == "-----BEGIN "*"PRIVATE KEY-----" ]]
}

@test "a second start is a no-op that exits 0 and keeps the key" {
  local pid_before key_before
  pid_before="$(cat "${SANDBOX_DIR}/moto.pid")"
  key_before="$(cat "${SANDBOX_DIR}/my_ec2_keypair.pem")"
  run --separate-stderr "${SANDBOX}" start
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"already answers"* ]]
  [ "$(cat "${SANDBOX_DIR}/moto.pid")" = "${pid_before}" ]
  [ "$(cat "${SANDBOX_DIR}/my_ec2_keypair.pem")" = "${key_before}" ]
}

@test "start on a running emulator recreates a missing key pair" {
  "${AWS_CLI}" --endpoint-url "${SANDBOX_URL}" ec2 delete-key-pair --key-name my_ec2_keypair
  KEY_NAME=other_key run --separate-stderr "${SANDBOX}" start
  [ "${status}" -eq 0 ]
  [ -f "${SANDBOX_DIR}/other_key.pem" ]
  run --separate-stderr "${SANDBOX}" start
  [ "${status}" -eq 0 ]
  run "${AWS_CLI}" --endpoint-url "${SANDBOX_URL}" --output text \
    ec2 describe-key-pairs --key-names my_ec2_keypair --query 'KeyPairs[0].KeyName'
  [ "${output}" = "my_ec2_keypair" ]
}

@test "stop stops the server" {
  local pid
  pid="$(cut -d' ' -f1 "${SANDBOX_DIR}/moto.pid")"
  run "${SANDBOX}" stop
  [ "${status}" -eq 0 ]
  [ ! -e "${SANDBOX_DIR}/moto.pid" ]
  # Gone, or a zombie its new parent has not reaped yet.
  ! kill -0 "${pid}" 2>/dev/null || [[ "$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/${pid}/stat")" == Z ]]
}

@test "status is 3 after stop" {
  run "${SANDBOX}" status
  [ "${status}" -eq 3 ]
}

@test "stop again exits 0" {
  run "${SANDBOX}" stop
  [ "${status}" -eq 0 ]
}

@test "stop never kills an unrelated process named in the pid file" {
  sleep 300 3>&- &
  local pid=$!
  mkdir -p "${SANDBOX_DIR}"
  printf '%s\n' "${pid}" >"${SANDBOX_DIR}/moto.pid"
  run "${SANDBOX}" stop
  local alive=0
  kill -0 "${pid}" 2>/dev/null && alive=1
  kill "${pid}" 2>/dev/null || true
  [ "${status}" -eq 0 ]
  [ "${alive}" -eq 1 ]
  [ ! -e "${SANDBOX_DIR}/moto.pid" ]
}

@test "stop never signals a moto_server look-alike whose start time is not the recorded one" {
  bash -c "exec -a moto_server python3 -c 'import time; time.sleep(300)' -p ${SANDBOX_PORT}" 3>&- &
  local pid=$!
  mkdir -p "${SANDBOX_DIR}"
  sleep 0.2
  [[ "$(tr '\0' ' ' <"/proc/${pid}/cmdline")" == "moto_server "* ]]
  printf '%s 1\n' "${pid}" >"${SANDBOX_DIR}/moto.pid"  # a pid reused since: another start time
  run "${SANDBOX}" stop
  local alive=0
  kill -0 "${pid}" 2>/dev/null && alive=1
  kill "${pid}" 2>/dev/null || true
  [ "${status}" -eq 0 ]
  [ "${alive}" -eq 1 ]
  [[ "${output}" == *"nothing signalled"* ]]
}

@test "stop ignores a pid file with garbage" {
  mkdir -p "${SANDBOX_DIR}"
  printf '%s\n' '-1' >"${SANDBOX_DIR}/moto.pid"
  run "${SANDBOX}" stop
  [ "${status}" -eq 0 ]
  printf '%s\n' '$(touch pwned)' >"${SANDBOX_DIR}/moto.pid"
  run "${SANDBOX}" stop
  [ "${status}" -eq 0 ]
  [ ! -e pwned ]
}
