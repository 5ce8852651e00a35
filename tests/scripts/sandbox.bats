#!/usr/bin/env bats
# Tests for scripts/sandbox.sh against real moto servers on free ports: the first one runs from its
# start to the stop tests at the end, a second one joins it for the per-port tests (two emulators side
# by side). The tests read the emulator's key pairs through its EC2 API with curl (ec2 below): an
# `aws` process costs ~0.5 CPU-s, and the script's own calls are what is tested.
# Needs moto_server and aws: $MOTO_SERVER / $AWS_CLI, else on PATH.

bats_require_minimum_version 1.5.0

# free_port: print a TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

setup_file() {
  REPO_ROOT="$(cd -- "${BATS_TEST_DIRNAME}/../.." && pwd)"
  export REPO_ROOT
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
  SECOND_PORT="$(free_port)"
  while [[ "${SECOND_PORT}" == "${SANDBOX_PORT}" ]]; do SECOND_PORT="$(free_port)"; done
  export SANDBOX_PORT SECOND_PORT
  export SANDBOX_DIR="${BATS_FILE_TMPDIR}/sandbox"
  export SANDBOX_URL="http://127.0.0.1:${SANDBOX_PORT}" SECOND_URL="http://127.0.0.1:${SECOND_PORT}"
  # Not the default port (5055): each port's state lives in SANDBOX_DIR/<port>.
  export STATE_DIR="${SANDBOX_DIR}/${SANDBOX_PORT}" SECOND_STATE_DIR="${SANDBOX_DIR}/${SECOND_PORT}"
}

teardown_file() {
  "${SANDBOX}" stop >/dev/null 2>&1 || true
  SANDBOX_PORT="${SECOND_PORT}" "${SANDBOX}" stop >/dev/null 2>&1 || true
}

# ec2 URL ACTION [NAME=VALUE...]: call the emulator's EC2 Query API (any signature passes); print its XML.
ec2() {
  local url="$1" query="Action=$2&Version=2016-11-15" param
  shift 2
  for param in "$@"; do query+="&${param}"; done
  curl --silent --fail --noproxy '*' --max-time 10 -H "Authorization: AWS4-HMAC-SHA256 \
Credential=testing/20260101/${AWS_DEFAULT_REGION}/ec2/aws4_request, SignedHeaders=host, Signature=0" "${url}/?${query}"
}

# key_pair_name URL NAME: the name of the emulator's key pair NAME (fails if it has none).
key_pair_name() {
  local xml
  xml="$(ec2 "$1" DescribeKeyPairs "KeyName.1=$2")" || return
  sed -n 's:.*<keyName>\([^<]*\)</keyName>.*:\1:p' <<<"${xml}"
}

# both_answer: the emulators on SANDBOX_PORT and SECOND_PORT both report running.
both_answer() {
  run "${SANDBOX}" status
  [ "${status}" -eq 0 ]
  SANDBOX_PORT="${SECOND_PORT}" run "${SANDBOX}" status
  [ "${status}" -eq 0 ]
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
  [ ! -e "${STATE_DIR}/moto.pid" ]
}

@test "start launches the server and creates the key pair" {
  run --separate-stderr "${SANDBOX}" start
  echo "stdout: ${output}"
  echo "stderr: ${stderr}"
  [ "${status}" -eq 0 ]
  [ "${lines[${#lines[@]} - 1]}" = "sandbox: moto server at ${SANDBOX_URL} (key pair my_ec2_keypair ready)" ]
  [ -s "${STATE_DIR}/moto.pid" ]
  [[ "$(cat "${STATE_DIR}/moto.pid")" =~ ^[0-9]+\ [0-9]+$ ]]  # pid and start time
  [[ "$(tr '\0' ' ' <"/proc/$(cut -d' ' -f1 "${STATE_DIR}/moto.pid")/cmdline")" == *moto_server* ]]
  [ -f "${STATE_DIR}/moto.log" ]
  [ "$(stat -c '%a' "${STATE_DIR}/moto.log")" = 600 ]
  [ "$(stat -c '%a' "${STATE_DIR}/moto.pid")" = 600 ]
}

@test "status is 0 while running" {
  run "${SANDBOX}" status
  [ "${status}" -eq 0 ]
}

@test "the key pair exists in the emulator and its private key is mode 600" {
  run key_pair_name "${SANDBOX_URL}" my_ec2_keypair
  [ "${status}" -eq 0 ]
  [ "${output}" = "my_ec2_keypair" ]
  local pem="${STATE_DIR}/my_ec2_keypair.pem"
  [ -f "${pem}" ]
  [ "$(stat -c '%a' "${pem}")" = "600" ]
  [[ "$(head -n 1 "${pem}")" == "-----BEGIN "*"PRIVATE KEY-----" ]]
}

@test "a second start is a no-op that exits 0 and keeps the key" {
  local pid_before key_before
  pid_before="$(cat "${STATE_DIR}/moto.pid")"
  key_before="$(cat "${STATE_DIR}/my_ec2_keypair.pem")"
  run --separate-stderr "${SANDBOX}" start
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"already answers"* ]]
  [ "$(cat "${STATE_DIR}/moto.pid")" = "${pid_before}" ]
  [ "$(cat "${STATE_DIR}/my_ec2_keypair.pem")" = "${key_before}" ]
}

@test "start on a running emulator recreates a missing key pair" {
  ec2 "${SANDBOX_URL}" DeleteKeyPair KeyName=my_ec2_keypair >/dev/null
  run key_pair_name "${SANDBOX_URL}" my_ec2_keypair
  [ "${status}" -ne 0 ]  # gone
  KEY_NAME=other_key run --separate-stderr "${SANDBOX}" start
  [ "${status}" -eq 0 ]
  [ -f "${STATE_DIR}/other_key.pem" ]
  run --separate-stderr "${SANDBOX}" start
  [ "${status}" -eq 0 ]
  run key_pair_name "${SANDBOX_URL}" my_ec2_keypair
  [ "${output}" = "my_ec2_keypair" ]
}

# --- Per port: each SANDBOX_PORT is its own emulator, with its own PID file, log, key and database. ---

@test "dir: the default port 5055 keeps SANDBOX_DIR, any other port SANDBOX_DIR/<port>" {
  SANDBOX_PORT=5055 run "${SANDBOX}" dir
  [ "${status}" -eq 0 ]
  [ "${output}" = "${SANDBOX_DIR}" ]
  SANDBOX_PORT=5056 run "${SANDBOX}" dir
  [ "${output}" = "${SANDBOX_DIR}/5056" ]
  SANDBOX_PORT=05056 run "${SANDBOX}" dir
  [ "${output}" = "${SANDBOX_DIR}/5056" ]
  run "${SANDBOX}" dir
  [ "${output}" = "${STATE_DIR}" ]
}

# make_n TARGET VAR=VALUE...: what `make TARGET` would run (make -n), the user's sandbox settings unset.
make_n() {
  env -u SANDBOX_DATABASE_URL -u SSH_KEY_PATH -u EC2_TARGET -u MAKEFLAGS -u MAKELEVEL \
    make -C "${REPO_ROOT}" --no-print-directory -n "$@"
}

@test "make run, doctor and serve-sandbox use the port's database and key, 5055 the old paths" {
  local target
  for target in run doctor serve-sandbox; do
    run make_n "${target}" SANDBOX_PORT=5056
    echo "${output}"
    [ "${status}" -eq 0 ]
    [[ "${output}" == *'EC2_ENDPOINT_URL=http://127.0.0.1:5056 DATABASE_URL=${SANDBOX_DATABASE_URL:-./data/sandbox/5056/instances.db}'* ]]
    [[ "${output}" == *'SSH_KEY_PATH=${SSH_KEY_PATH:-./data/sandbox/5056/my_ec2_keypair.pem}'* ]]
    run make_n "${target}" SANDBOX_PORT=5055
    [ "${status}" -eq 0 ]
    [[ "${output}" == *'EC2_ENDPOINT_URL=http://127.0.0.1:5055 DATABASE_URL=${SANDBOX_DATABASE_URL:-./data/sandbox/instances.db}'* ]]
    [[ "${output}" == *'SSH_KEY_PATH=${SSH_KEY_PATH:-./data/sandbox/my_ec2_keypair.pem}'* ]]
  done
  # serve-sandbox starts that port's emulator, then the background server with make run's settings.
  run make_n serve-sandbox SANDBOX_PORT=5056 PORT=8011
  [[ "${output}" == *"SANDBOX_PORT=5056 scripts/sandbox.sh start"* ]]
  [[ "${output}" == *' EC2_TARGET=sandbox '*' scripts/manage_server.sh start "" 127.0.0.1 8011'* ]]
  run make_n sandbox-stop SANDBOX_PORT=5056
  [[ "${output}" == *"SANDBOX_PORT=5056 scripts/sandbox.sh stop"* ]]
  run make_n sandbox-status SANDBOX_PORT=5056
  [[ "${output}" == *"SANDBOX_PORT=5056 scripts/sandbox.sh status"* ]]
}

@test "two ports run at once, each with its own pid file, log and key" {
  run --separate-stderr "${SANDBOX}" start
  [ "${status}" -eq 0 ]
  local key_first
  key_first="$(cat "${STATE_DIR}/my_ec2_keypair.pem")"
  SANDBOX_PORT="${SECOND_PORT}" run --separate-stderr "${SANDBOX}" start
  echo "stdout: ${output}"
  echo "stderr: ${stderr}"
  [ "${status}" -eq 0 ]
  [[ "${output}" != *"already answers"* ]]  # a server of its own, not the first one's
  [ "${lines[${#lines[@]} - 1]}" = "sandbox: moto server at ${SECOND_URL} (key pair my_ec2_keypair ready)" ]
  [ -s "${SECOND_STATE_DIR}/moto.pid" ]
  [ -f "${SECOND_STATE_DIR}/moto.log" ]
  [ -f "${SECOND_STATE_DIR}/my_ec2_keypair.pem" ]
  [ "$(cut -d' ' -f1 "${STATE_DIR}/moto.pid")" != "$(cut -d' ' -f1 "${SECOND_STATE_DIR}/moto.pid")" ]
  # Each emulator has its own key pair; the first one's private key is untouched.
  [ "$(cat "${STATE_DIR}/my_ec2_keypair.pem")" = "${key_first}" ]
  [ "$(cat "${SECOND_STATE_DIR}/my_ec2_keypair.pem")" != "${key_first}" ]
  [ "$(stat -c '%a' "${SECOND_STATE_DIR}")" = 700 ]
  both_answer
}

@test "status reports its own port, with its pid and state directory, and names the other one" {
  local first_pid second_pid
  first_pid="$(cut -d' ' -f1 "${STATE_DIR}/moto.pid")"
  second_pid="$(cut -d' ' -f1 "${SECOND_STATE_DIR}/moto.pid")"
  run "${SANDBOX}" status
  echo "${output}"
  [ "${status}" -eq 0 ]
  [ "${lines[0]}" = "sandbox: running at ${SANDBOX_URL} (pid ${first_pid}, state in ${STATE_DIR})" ]
  [ "${lines[1]}" = "sandbox: another emulator runs at ${SECOND_URL} (stop it: make sandbox-stop SANDBOX_PORT=${SECOND_PORT})" ]
  SANDBOX_PORT="${SECOND_PORT}" run "${SANDBOX}" status
  echo "${output}"
  [ "${status}" -eq 0 ]
  [ "${lines[0]}" = "sandbox: running at ${SECOND_URL} (pid ${second_pid}, state in ${SECOND_STATE_DIR})" ]
  [ "${lines[1]}" = "sandbox: another emulator runs at ${SANDBOX_URL} (stop it: make sandbox-stop SANDBOX_PORT=${SANDBOX_PORT})" ]
}

@test "stop on a port where nothing runs stops nothing and names the ones that run" {
  local port
  port="$(free_port)"
  SANDBOX_PORT="${port}" run "${SANDBOX}" stop
  echo "${output}"
  [ "${status}" -eq 0 ]
  [ "${lines[0]}" = "sandbox: not running at http://127.0.0.1:${port} (no pid file in ${SANDBOX_DIR}/${port})" ]
  [[ "${output}" == *"another emulator runs at ${SANDBOX_URL} "* ]]
  [[ "${output}" == *"another emulator runs at ${SECOND_URL} "* ]]
  both_answer
}

@test "stop on one port stops only that one; the other keeps running, its pid file kept" {
  local first_pid_file second_pid
  first_pid_file="$(cat "${STATE_DIR}/moto.pid")"
  second_pid="$(cut -d' ' -f1 "${SECOND_STATE_DIR}/moto.pid")"
  SANDBOX_PORT="${SECOND_PORT}" run "${SANDBOX}" stop
  echo "${output}"
  [ "${status}" -eq 0 ]
  [ "${lines[0]}" = "sandbox: moto server at ${SECOND_URL} (pid ${second_pid}) stopped" ]
  [ "${lines[1]}" = "sandbox: another emulator runs at ${SANDBOX_URL} (stop it: make sandbox-stop SANDBOX_PORT=${SANDBOX_PORT})" ]
  [ ! -e "${SECOND_STATE_DIR}/moto.pid" ]
  SANDBOX_PORT="${SECOND_PORT}" run "${SANDBOX}" status
  [ "${status}" -eq 3 ]
  [ "${output}" = "sandbox: not running at ${SECOND_URL}"$'\n'"sandbox: another emulator runs at ${SANDBOX_URL} (stop it: make sandbox-stop SANDBOX_PORT=${SANDBOX_PORT})" ]
  # The first one still answers and is still the one its pid file names (its own stop: "stop stops the server").
  [ "$(cat "${STATE_DIR}/moto.pid")" = "${first_pid_file}" ]
  run "${SANDBOX}" status
  [ "${status}" -eq 0 ]
  [ "${output}" = "sandbox: running at ${SANDBOX_URL} (pid ${first_pid_file% *}, state in ${STATE_DIR})" ]
  run key_pair_name "${SANDBOX_URL}" my_ec2_keypair
  [ "${output}" = "my_ec2_keypair" ]
}

# --- Stop: the first emulator, which ran from the first start; then PID files and ports it did not start. ---

@test "stop stops the server" {
  local pid
  pid="$(cut -d' ' -f1 "${STATE_DIR}/moto.pid")"
  run "${SANDBOX}" stop
  [ "${status}" -eq 0 ]
  [ "${output}" = "sandbox: moto server at ${SANDBOX_URL} (pid ${pid}) stopped" ]
  [ ! -e "${STATE_DIR}/moto.pid" ]
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

# `sandbox.sh stop` with the pid file naming PID, which is not ours: stop exits 0 and PID lives (then the test ends
# it). $output is stop's.
stop_spares() {
  local pid="$1" alive=0
  run "${SANDBOX}" stop
  kill -0 "${pid}" 2>/dev/null && alive=1
  kill "${pid}" 2>/dev/null || true
  [ "${status}" -eq 0 ]
  [ "${alive}" -eq 1 ]
}

@test "stop never kills an unrelated process named in the pid file" {
  sleep 300 3>&- &
  local pid=$!
  mkdir -p "${STATE_DIR}"
  printf '%s\n' "${pid}" >"${STATE_DIR}/moto.pid"
  stop_spares "${pid}"
  [ ! -e "${STATE_DIR}/moto.pid" ]
}

@test "stop never signals a moto_server look-alike whose start time is not the recorded one" {
  bash -c "exec -a moto_server python3 -c 'import time; time.sleep(300)' -p ${SANDBOX_PORT}" 3>&- &
  local pid=$!
  mkdir -p "${STATE_DIR}"
  sleep 0.2
  [[ "$(tr '\0' ' ' <"/proc/${pid}/cmdline")" == "moto_server "* ]]
  printf '%s 1\n' "${pid}" >"${STATE_DIR}/moto.pid"  # a pid reused since: another start time
  stop_spares "${pid}"
  [[ "${output}" == *"nothing signalled"* ]]
}

@test "stop ignores a pid file with garbage" {
  mkdir -p "${STATE_DIR}"
  printf '%s\n' '-1' >"${STATE_DIR}/moto.pid"
  run "${SANDBOX}" stop
  [ "${status}" -eq 0 ]
  printf '%s\n' '$(touch pwned)' >"${STATE_DIR}/moto.pid"
  run "${SANDBOX}" stop
  [ "${status}" -eq 0 ]
  [ ! -e pwned ]
}

@test "status and stop leave alone what answers on the port without having been started here" {
  mkdir -p "${BATS_TEST_TMPDIR}/www/moto-api"  # GET /moto-api/ answers 200 (a directory listing)
  python3 -m http.server --bind 127.0.0.1 --directory "${BATS_TEST_TMPDIR}/www" "${SECOND_PORT}" \
    >/dev/null 2>&1 3>&- &
  local pid=$! i
  for i in $(seq 50); do
    curl -s -f -o /dev/null --noproxy '*' "${SECOND_URL}/moto-api/" && break
    sleep 0.1
  done
  SANDBOX_PORT="${SECOND_PORT}" run "${SANDBOX}" status
  local status_rc="${status}" status_out="${output}"
  SANDBOX_PORT="${SECOND_PORT}" run "${SANDBOX}" stop
  local alive=0
  kill -0 "${pid}" 2>/dev/null && alive=1
  kill "${pid}" 2>/dev/null || true
  echo "status: ${status_out}"
  echo "stop: ${output}"
  [ "${status_rc}" -eq 0 ]
  [ "${status_out}" = "sandbox: running at ${SECOND_URL} (not started by this script: 'stop' leaves it alone)" ]
  [ "${status}" -eq 0 ]
  [ "${output}" = "sandbox: something answers at ${SECOND_URL}, but not an emulator this script started (no pid file in ${SECOND_STATE_DIR}): nothing stopped" ]
  [ "${alive}" -eq 1 ]
}
