#!/usr/bin/env bats
# Tests for scripts/manage_server.sh: the real API server (uvicorn) on a free
# port of 127.0.0.1, started from a throw-away APP_DIR whose app/ is this
# checkout's. The server points at a closed EC2 endpoint with fake
# credentials: /health answers without AWS, and nothing reaches AWS. Its AWS_CLI
# is a stub that fails as the real CLI does against that closed endpoint (the
# servers spawn a few at start-up; each real one costs ~0.5 CPU-s), but for
# the TARGET=sandbox test, which serves against a real emulator.
# The tests that need a running server of ours, not a fresh start, share one
# (SHARED_APP: use_shared and ensure_shared); teardown_file stops it.
# Needs the project's venv (PYTHON, default <repo>/.venv/bin/python) and curl.

bats_require_minimum_version 1.5.0

# free_port: print a TCP port that is free on 127.0.0.1 right now.
free_port() {
  "${PYTHON}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# health [PORT]: succeed if /health answers on 127.0.0.1.
health() {
  curl --silent --fail --noproxy '*' --max-time 3 -o /dev/null "http://127.0.0.1:${1:-${PORT}}/health"
}

# alive PID: the process exists and is not a zombie.
alive() {
  local state
  state="$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "${state}" && "${state}" != "Z" ]]
}

# spawn CMD...: run CMD in the background, detached from bats' descriptors;
# its pid goes to $SPAWNED and is killed in teardown.
spawn() {
  "$@" </dev/null >/dev/null 2>&1 3>&- &
  SPAWNED=$!
  disown "${SPAWNED}"
  printf '%s\n' "${SPAWNED}" >>"${BATS_TEST_TMPDIR}/spawned"
}

# servers_on PORT: how many processes run this app's uvicorn on PORT (read
# with builtins: two processes per /proc entry cost ~0.25 CPU-s a call).
servers_on() {
  local f n=0 argv IFS=' '
  for f in /proc/[0-9]*/cmdline; do
    mapfile -d '' -t argv <"${f}" 2>/dev/null || continue
    if [[ "${argv[*]}" =~ -m\ uvicorn\ app\.main:app\ --host\ 127\.0\.0\.1\ --port\ $1\ *$ ]]; then
      n=$((n + 1))
    fi
  done
  echo "${n}"
}

# make_app_dir DIR: a checkout for the server (app/ is this repo's).
make_app_dir() {
  mkdir -p -- "$1"
  ln -s -- "${REPO_ROOT}/app" "$1/app"
}

setup_file() {
  REPO_ROOT="$(cd -- "${BATS_TEST_DIRNAME}/../.." && pwd)"
  export REPO_ROOT
  export MANAGE="${REPO_ROOT}/scripts/manage_server.sh"
  if [[ -z "${PYTHON:-}" ]]; then
    PYTHON="${REPO_ROOT}/.venv/bin/python"
  fi
  if ! "${PYTHON}" -c 'import uvicorn, fastapi' 2>/dev/null; then
    echo "no python with uvicorn at PYTHON=${PYTHON}: run 'make venv'" >&3
    return 1
  fi
  export PYTHON
  export REAL_PYTHON="${PYTHON}"
  export ORIG_AWS_CLI="${AWS_CLI:-}"
  export AWS_CLI="${BATS_FILE_TMPDIR}/aws"
  cat >"${AWS_CLI}" <<'STUB'
#!/bin/sh
# The AWS CLI against a closed endpoint: a version, and "Could not connect" to everything else.
if [ "$1" = --version ]; then
  echo "aws-cli/2.0.0 Python/3 Linux (manage_server.bats stub)"
  exit 0
fi
printf '\nCould not connect to the endpoint URL: "%s/"\n' "${EC2_ENDPOINT_URL:-https://ec2.amazonaws.com}" >&2
exit 255
STUB
  chmod +x "${AWS_CLI}"
  # The shared server's checkout: one that the user 'nobody' can see (the other-user test).
  SHARED_APP="$(mktemp -d /tmp/manage-server-bats.XXXXXX)"
  chmod 755 "${SHARED_APP}"
  make_app_dir "${SHARED_APP}"
  export SHARED_APP
  free_port >"${BATS_FILE_TMPDIR}/shared.port"
}

teardown_file() {
  local pid
  STOP_TIMEOUT=2 "${MANAGE}" stop "${SHARED_APP}" >/dev/null 2>&1 || true
  if [[ -f "${BATS_FILE_TMPDIR}/shared.pids" ]]; then
    while read -r pid; do  # whatever a failed test left behind, if it still serves SHARED_APP
      if [[ "$(readlink "/proc/${pid}/cwd" 2>/dev/null)" == "${SHARED_APP}" ]]; then
        kill -KILL "${pid}" 2>/dev/null || true
      fi
    done <"${BATS_FILE_TMPDIR}/shared.pids"
  fi
  rm -rf -- "${SHARED_APP}"
}

# use_shared: this test works on the shared server's checkout (APP_DIR, PORT,
# PIDF); teardown leaves the server running for the next test.
use_shared() {
  SHARED=1
  APP_DIR="${SHARED_APP}"
  RUN_DIR="${APP_DIR}/data/run"
  PIDF="${RUN_DIR}/server.pid"
  PORT="$(cat "${BATS_FILE_TMPDIR}/shared.port")"
  export DATABASE_URL="${BATS_FILE_TMPDIR}/shared.db"
}

# ensure_shared: the shared server runs and answers; started here unless a
# test before left it running.
ensure_shared() {
  if "${MANAGE}" status "${SHARED_APP}" >/dev/null 2>&1; then
    return 0
  fi
  DATABASE_URL="${BATS_FILE_TMPDIR}/shared.db" "${MANAGE}" start "${SHARED_APP}" 127.0.0.1 \
    "$(cat "${BATS_FILE_TMPDIR}/shared.port")" >/dev/null
  record_shared
}

# record_shared [PORT]: note the shared server's pid (for teardown_file) and its port.
record_shared() {
  cat "${SHARED_APP}/data/run/server.pid" >>"${BATS_FILE_TMPDIR}/shared.pids" 2>/dev/null || true
  if [[ -n "${1:-}" ]]; then
    echo "$1" >"${BATS_FILE_TMPDIR}/shared.port"
  fi
}

setup() {
  # Guard: fake credentials, a closed EC2 endpoint, no way out but 127.0.0.1.
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=
  export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
  export EC2_ENDPOINT_URL=http://127.0.0.1:9
  export HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost
  unset AWS_PROFILE AWS_REGION EC2_TARGET API_TOKEN PID_FILE LOG_FILE BUDGET_USD SANDBOX_BUDGET_USD
  unset JENKINS_NODE_COOKIE BUILD_ID BUILD_NUMBER JENKINS_SERVER_COOKIE HUDSON_COOKIE
  export DATABASE_URL="${BATS_TEST_TMPDIR}/instances.db"
  export START_TIMEOUT=30 STOP_TIMEOUT=5
  SHARED=""
  APP_DIR="${BATS_TEST_TMPDIR}/checkout"
  make_app_dir "${APP_DIR}"
  RUN_DIR="${APP_DIR}/data/run"
  PIDF="${RUN_DIR}/server.pid"
  PORT="$(free_port)"
  : >"${BATS_TEST_TMPDIR}/spawned"
}

teardown() {
  local pid
  if [[ -z "${SHARED}" && -f "${PIDF}" ]]; then
    STOP_TIMEOUT=2 "${MANAGE}" stop "${APP_DIR}" >/dev/null 2>&1 || true
  fi
  while read -r pid; do
    kill -KILL "${pid}" 2>/dev/null || true
  done <"${BATS_TEST_TMPDIR}/spawned"
}

# start_ok [HOST]: start the server on $PORT and check it answers.
start_ok() {
  run --separate-stderr "${MANAGE}" start "${APP_DIR}" "${1:-127.0.0.1}" "${PORT}"
  echo "stdout: ${output}"
  echo "stderr: ${stderr}"
  [ "${status}" -eq 0 ]
  health
}

@test "-h prints usage; usage errors exit 2 with usage on stderr" {
  run --separate-stderr "${MANAGE}" -h
  [ "${status}" -eq 0 ]
  [[ "${output}" == Usage:* ]]
  local args
  for args in "" "bogus" "start ${APP_DIR} 127.0.0.1 8000 extra" "start ${APP_DIR} 127.0.0.1 0" \
    "status ${APP_DIR} 127.0.0.1 65536" "stop ${APP_DIR} 127.0.0.1 80a" "start ${APP_DIR} -x" \
    "status ${BATS_TEST_TMPDIR}" "status /nonexistent"; do
    # shellcheck disable=SC2086  # split the argument lists on purpose
    run --separate-stderr "${MANAGE}" ${args}
    echo "args: ${args} -> ${status}: ${stderr}"
    [ "${status}" -eq 2 ]
    [[ "${stderr}" == *Usage:* ]]
  done
  run --separate-stderr "${MANAGE}" status "${APP_DIR}" 'a b'
  [ "${status}" -eq 2 ]
}

@test "before any start: status is 3, stop is 0, and neither creates files" {
  run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 3 ]
  run "${MANAGE}" stop "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 0 ]
  [ ! -e "${APP_DIR}/data" ]
}

@test "start detaches the server, writes the PID file and waits for /health" {
  use_shared
  "${MANAGE}" stop "${APP_DIR}" >/dev/null  # a fresh start, whatever ran before
  start_ok
  record_shared
  [[ "${output}" == *"http://127.0.0.1:${PORT}/docs"* ]]
  # Which EC2 and which database, in its first lines: real AWS is never a surprise.
  [[ "${output}" == *"targets SANDBOX (http://127.0.0.1:"*"database "* ]]
  [ -f "${PIDF}" ]
  [[ "$(cat "${PIDF}")" =~ ^[1-9][0-9]*$ ]]
  local pid
  pid="$(cat "${PIDF}")"
  # Our uvicorn, in APP_DIR, in a session of its own, with no terminal input.
  [ "$(tr '\0' ' ' <"/proc/${pid}/cmdline")" = "${PYTHON} -m uvicorn app.main:app --host 127.0.0.1 --port ${PORT} " ]
  [ "$(readlink "/proc/${pid}/cwd")" = "$(cd -P "${APP_DIR}" && pwd)" ]
  [ "$(awk '{ sub(/.*\) /, ""); print $4 }' "/proc/${pid}/stat")" = "${pid}" ]  # session id
  [ "$(readlink "/proc/${pid}/fd/0")" = /dev/null ]
  [ "$(readlink "/proc/${pid}/fd/1")" = "${RUN_DIR}/server.log" ]
  grep -q "Uvicorn running on http://127.0.0.1:${PORT}" "${RUN_DIR}/server.log"
  # The PID file, the log and their directory are the user's alone.
  [ "$(stat -c '%a' "${PIDF}")" = 600 ]
  [ "$(stat -c '%a' "${RUN_DIR}/server.log")" = 600 ]
  [ "$(stat -c '%a' "${RUN_DIR}")" = 700 ]
  run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"pid ${pid}"* ]]
}

@test "a second start exits 0 and leaves the one server alone" {
  use_shared
  ensure_shared
  local pid
  pid="$(cat "${PIDF}")"
  run --separate-stderr "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"already running (pid ${pid})"* ]]
  [ "$(cat "${PIDF}")" = "${pid}" ]
  [ "$(servers_on "${PORT}")" -eq 1 ]
  # The same server on another port is a conflict, not a second server.
  run --separate-stderr "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "$(free_port)"
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"use 'restart'"* ]]
  [ "$(cat "${PIDF}")" = "${pid}" ]
}

@test "a server of another user: status and stop exit 4 and signal nothing" {
  if [[ "$(id -u)" -ne 0 ]] || ! command -v runuser >/dev/null || ! id nobody >/dev/null 2>&1 \
    || ! runuser -u nobody -- test -x "${MANAGE}"; then
    skip "needs root, runuser and a user 'nobody' that can run ${MANAGE}"
  fi
  # The shared server's checkout, which 'nobody' can see, served by root.
  use_shared
  ensure_shared
  local pid
  pid="$(cat "${PIDF}")"
  run runuser -u nobody -- "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 4 ]
  [[ "${output}" == *"no permission"* ]]
  run --separate-stderr runuser -u nobody -- "${MANAGE}" stop "${APP_DIR}"
  echo "${stderr}"
  [ "${status}" -eq 4 ]
  [[ "${stderr}" != *"line "* ]]
  alive "${pid}"
  health
}

@test "a server of another checkout, named by the PID file, is not ours" {
  # The other checkout: the shared server's.
  ensure_shared
  local other="${SHARED_APP}"
  local pid
  pid="$(cat "${other}/data/run/server.pid")"
  PID_FILE="${other}/data/run/server.pid" run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 1 ]
  [[ "${output}" == *"another checkout"* ]]
  alive "${pid}"
}

@test "stop ends the server with SIGTERM; then status is 3 and stop is 0 again" {
  use_shared
  ensure_shared
  health
  local pid
  pid="$(cat "${PIDF}")"
  run --separate-stderr "${MANAGE}" stop "${APP_DIR}"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"stopped (pid ${pid})"* ]]
  [[ "${stderr}" != *SIGKILL* ]]
  run ! alive "${pid}"
  [ ! -e "${PIDF}" ]
  run ! health
  grep -q "Finished server process \[${pid}\]" "${RUN_DIR}/server.log"
  run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 3 ]
  run "${MANAGE}" stop "${APP_DIR}"
  [ "${status}" -eq 0 ]
}

@test "restart replaces a running server, and starts a stopped one" {
  use_shared
  "${MANAGE}" stop "${APP_DIR}" >/dev/null  # stopped, whatever ran before
  run --separate-stderr "${MANAGE}" restart "${APP_DIR}" 127.0.0.1 "${PORT}"
  record_shared
  [ "${status}" -eq 0 ]
  health
  local pid
  pid="$(cat "${PIDF}")"
  PORT="$(free_port)"
  run --separate-stderr "${MANAGE}" restart "${APP_DIR}" 127.0.0.1 "${PORT}"
  record_shared "${PORT}"
  echo "${output} ${stderr}"
  [ "${status}" -eq 0 ]
  run ! alive "${pid}"
  [ "$(cat "${PIDF}")" != "${pid}" ]
  health
}

@test "running but not answering: status 4; stop escalates to SIGKILL" {
  use_shared
  ensure_shared
  local pid
  pid="$(cat "${PIDF}")"
  kill -STOP "${pid}"
  run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 4 ]
  STOP_TIMEOUT=1 run --separate-stderr "${MANAGE}" stop "${APP_DIR}"
  echo "${output} ${stderr}"
  [ "${status}" -eq 0 ]
  [[ "${stderr}" == *SIGKILL* ]]
  run ! alive "${pid}"
  [ ! -e "${PIDF}" ]
}

@test "concurrent starts do not race: one server, both exit 0" {
  local out="${BATS_TEST_TMPDIR}/out"
  "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}" >"${out}.1" 2>&1 3>&- &
  local first=$!
  "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}" >"${out}.2" 2>&1 3>&- &
  local second=$!
  local rc1=0 rc2=0
  wait "${first}" || rc1=$?
  wait "${second}" || rc2=$?
  cat "${out}.1" "${out}.2"
  [ "${rc1}" -eq 0 ]
  [ "${rc2}" -eq 0 ]
  [ "$(cat "${out}.1" "${out}.2" | grep -c 'started (pid')" -eq 1 ]
  [ "$(cat "${out}.1" "${out}.2" | grep -c 'already running')" -eq 1 ]
  [ "$(servers_on "${PORT}")" -eq 1 ]
  health
}

@test "start refuses a port that is in use and says so" {
  spawn "${PYTHON}" -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(300)' "${PORT}"
  local holder="${SPAWNED}" i
  for ((i = 0; i < 50; i++)); do
    curl --silent --noproxy '*' --max-time 1 -o /dev/null "http://127.0.0.1:${PORT}/" && break
    [ "$?" -ne 7 ] && break  # 7: connection refused, nobody listens yet
    sleep 0.1
  done
  run --separate-stderr "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}"
  echo "${stderr}"
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"port ${PORT} on 127.0.0.1 is already in use"* ]]
  [ ! -e "${PIDF}" ]
  alive "${holder}"
  [ "$(servers_on "${PORT}")" -eq 0 ]
}

@test "a stale PID file (dead process): status 1, stop 0 and removes it, start replaces it" {
  true 3>&- &
  local dead=$!
  wait "${dead}" || true
  mkdir -p "${RUN_DIR}"
  echo "${dead}" >"${PIDF}"
  run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 1 ]
  run "${MANAGE}" stop "${APP_DIR}"
  [ "${status}" -eq 0 ]
  [ ! -e "${PIDF}" ]
  echo "${dead}" >"${PIDF}"
  start_ok
  [ "$(cat "${PIDF}")" != "${dead}" ]
}

@test "a PID file naming an unrelated live process: it is never signalled" {
  spawn sleep 300
  local victim="${SPAWNED}"
  mkdir -p "${RUN_DIR}"
  for pid in "${victim}" 1 "$$"; do
    echo "${pid}" >"${PIDF}"
    run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
    [ "${status}" -eq 1 ]
    run "${MANAGE}" stop "${APP_DIR}"
    [ "${status}" -eq 0 ]
    [ ! -e "${PIDF}" ]
  done
  alive "${victim}"
  echo "${victim}" >"${PIDF}"
  start_ok
  run "${MANAGE}" restart "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 0 ]
  run "${MANAGE}" stop "${APP_DIR}"
  [ "${status}" -eq 0 ]
  alive "${victim}"
}

@test "a look-alike uvicorn (same command line, same directory) that start did not launch is never signalled" {
  # A fake 'uvicorn' module that only sleeps: same argv and cwd as the server.
  mkdir -p "${BATS_TEST_TMPDIR}/fake"
  printf 'import time\ntime.sleep(300)\n' >"${BATS_TEST_TMPDIR}/fake/uvicorn.py"
  cd "${APP_DIR}"
  PYTHONPATH="${BATS_TEST_TMPDIR}/fake" spawn "${PYTHON}" -m uvicorn app.main:app --host 127.0.0.1 --port "${PORT}"
  local decoy="${SPAWNED}"
  cd - >/dev/null
  sleep 0.3
  mkdir -p "${RUN_DIR}"
  echo "${decoy}" >"${PIDF}"
  # No start record, then a record with another start time (a reused pid).
  for stamp in "" "${decoy} 12345"; do
    if [[ -n "${stamp}" ]]; then echo "${stamp}" >"${PIDF}.starttime"; fi
    echo "${decoy}" >"${PIDF}"
    run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
    [ "${status}" -eq 1 ]
    STOP_TIMEOUT=1 run "${MANAGE}" stop "${APP_DIR}"
    [ "${status}" -eq 0 ]
    alive "${decoy}"
  done
}

@test "hostile PID file contents: status 4, stop signals nothing" {
  spawn sleep 300
  local canary="${SPAWNED}" content
  mkdir -p "${RUN_DIR}"
  for content in "" "-1" "0" "00${canary}" "abc" "${canary}x" "${canary} ${canary}" \
    "$(printf '%s\n%s' "${canary}" 1)" '$(touch pwned)' "$(printf '%080d' 7)"; do
    printf '%s\n' "${content}" >"${PIDF}"
    run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
    echo "content '${content}': status ${status}: ${output}"
    [ "${status}" -eq 4 ]
    run "${MANAGE}" stop "${APP_DIR}"
    [ "${status}" -eq 0 ]
    [ ! -e "${PIDF}" ]
  done
  [ ! -e pwned ]
  [ ! -e "${APP_DIR}/pwned" ]
  alive "${canary}"
}

@test "a PID file that is a directory: status 4, stop and start refuse; a symlink is never followed" {
  mkdir -p "${PIDF}"
  run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 4 ]
  run --separate-stderr "${MANAGE}" stop "${APP_DIR}"
  [ "${status}" -eq 1 ]
  run --separate-stderr "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 1 ]
  [ -d "${PIDF}" ]
  rmdir "${PIDF}"
  [ "$(servers_on "${PORT}")" -eq 0 ]
  # A symlink (say, planted to make us overwrite or trust another file) is
  # not trusted, and replacing or removing it leaves its target alone.
  echo 1 >"${BATS_TEST_TMPDIR}/elsewhere"
  ln -s "${BATS_TEST_TMPDIR}/elsewhere" "${PIDF}"
  run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 4 ]
  run "${MANAGE}" stop "${APP_DIR}"
  [ "${status}" -eq 0 ]
  [ ! -L "${PIDF}" ]
  ln -s "${BATS_TEST_TMPDIR}/elsewhere" "${PIDF}"
  start_ok
  [ ! -L "${PIDF}" ]
  [ "$(cat "${BATS_TEST_TMPDIR}/elsewhere")" = 1 ]
}

@test "a server that never answers: start stops it after START_TIMEOUT, removes the PID file, shows the log" {
  local fake="${BATS_TEST_TMPDIR}/fakepython"
  # Python for anything but "-m uvicorn", which only sleeps.
  printf '#!/bin/bash\nif [[ "$1" != -m ]]; then exec "%s" "$@"; fi\necho "$$" >"%s"\n%s\nexec sleep 300\n' \
    "${REAL_PYTHON}" "${BATS_TEST_TMPDIR}/fake.pid" 'echo "fake server: listening nowhere"' >"${fake}"
  chmod +x "${fake}"
  SECONDS=0
  START_TIMEOUT=2 PYTHON="${fake}" run --separate-stderr "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}"
  echo "${output} ${stderr}"
  [ "${status}" -eq 1 ]
  [ "${SECONDS}" -lt 15 ]
  [[ "${stderr}" == *"fake server: listening nowhere"* ]]
  [[ "${stderr}" == *"did not become healthy"* ]]
  [ ! -e "${PIDF}" ]
  run ! alive "$(cat "${BATS_TEST_TMPDIR}/fake.pid")"
}

@test "a server that exits at start-up: start fails at once and shows why" {
  BACKEND=nope run --separate-stderr "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}"
  echo "${output} ${stderr}"
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"BACKEND"* ]]
  [[ "${stderr}" == *"exited"* ]]
  [ ! -e "${PIDF}" ]
  PYTHON=/nonexistent/python run --separate-stderr "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"python not found"* ]]
}

@test "Jenkins: the server survives the end of the job that started it" {
  local cookie="bats-${RANDOM}${RANDOM}"
  export MARKER_PASSED_THROUGH="yes"
  # The job: a shell in a session of its own carrying the build's variables.
  JENKINS_NODE_COOKIE="${cookie}" BUILD_ID="${cookie}" BUILD_NUMBER=42 BUILD_TAG="jenkins-x-42" \
    JOB_NAME=ec2-creator-local-manage JENKINS_SERVER_COOKIE="${cookie}" HUDSON_COOKIE="${cookie}" \
    run setsid --wait bash -c '"$0" start "$1" 127.0.0.1 "$2" 3>&-' "${MANAGE}" "${APP_DIR}" "${PORT}"
  echo "${output}"
  [ "${status}" -eq 0 ]
  local pid
  pid="$(cat "${PIDF}")"
  # ProcessTreeKiller at the end of the build: kill every process whose
  # environment carries the cookie (by JENKINS_NODE_COOKIE or BUILD_ID).
  local env_file p killed=""
  while read -r env_file; do
    p="${env_file#/proc/}"
    p="${p%/environ}"
    kill -KILL "${p}" 2>/dev/null && killed="${killed} ${p}"
  done < <(grep -l -a -z -x -e "JENKINS_NODE_COOKIE=${cookie}" -e "BUILD_ID=${cookie}" /proc/[0-9]*/environ 2>/dev/null)
  echo "killed:${killed}"
  [[ " ${killed} " != *" ${pid} "* ]]
  sleep 1
  alive "${pid}"
  health
  run "${MANAGE}" status "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 0 ]
  # The rest of the environment reaches the server; the build's variables don't.
  tr '\0' '\n' <"/proc/${pid}/environ" | grep -qx "MARKER_PASSED_THROUGH=yes"
  run ! grep -zE '^(JENKINS_NODE_COOKIE|BUILD_ID|BUILD_NUMBER|BUILD_TAG|JOB_NAME|JENKINS_SERVER_COOKIE|HUDSON_COOKIE)=' \
    "/proc/${pid}/environ"
}

@test "a non-loopback HOST needs API_TOKEN" {
  local host
  for host in 0.0.0.0 :: 10.1.2.3 example.com; do
    run --separate-stderr "${MANAGE}" start "${APP_DIR}" "${host}" "${PORT}"
    [ "${status}" -eq 1 ]
    [[ "${stderr}" == *"API_TOKEN"* ]]
  done
  API_TOKEN="" run --separate-stderr "${MANAGE}" start "${APP_DIR}" 0.0.0.0 "${PORT}"
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"API_TOKEN"* ]]
  [ ! -e "${PIDF}" ]
  [ "$(servers_on "${PORT}")" -eq 0 ]
  # A token in APP_DIR/.env counts: the next check (port in use) is reached.
  printf 'API_TOKEN=%s\n' "token-in-dotenv-0123456789abcdef" >"${APP_DIR}/.env"
  spawn "${PYTHON}" -c 'import socket, sys, time
s = socket.socket(); s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(); time.sleep(300)' "${PORT}"
  sleep 0.5
  run --separate-stderr "${MANAGE}" start "${APP_DIR}" 0.0.0.0 "${PORT}"
  echo "${stderr}"
  [ "${status}" -eq 1 ]
  [[ "${stderr}" != *"API_TOKEN"* ]]
  [[ "${stderr}" == *"in use"* ]]
  # So does a token per person (API_TOKENS_FILE), in the environment or in .env.
  rm "${APP_DIR}/.env"
  API_TOKENS_FILE="${BATS_TEST_TMPDIR}/tokens.toml" run --separate-stderr "${MANAGE}" start "${APP_DIR}" 0.0.0.0 "${PORT}"
  [ "${status}" -eq 1 ]
  [[ "${stderr}" != *"API_TOKEN"* && "${stderr}" == *"in use"* ]]
  printf 'API_TOKENS_FILE=%s\n' "${BATS_TEST_TMPDIR}/tokens.toml" >"${APP_DIR}/.env"
  run --separate-stderr "${MANAGE}" start "${APP_DIR}" 0.0.0.0 "${PORT}"
  [ "${status}" -eq 1 ]
  [[ "${stderr}" != *"API_TOKEN"* && "${stderr}" == *"in use"* ]]
}

@test "with API_TOKEN set, 0.0.0.0 is allowed and status probes it on loopback" {
  rm -f "${APP_DIR}/.env"
  API_TOKEN="test-token-0123456789abcdef0123456789" start_ok 0.0.0.0
  run "${MANAGE}" status "${APP_DIR}"
  [ "${status}" -eq 0 ]
}

@test "PID_FILE, LOG_FILE and the default PYTHON (APP_DIR/.venv/bin/python)" {
  mkdir -p "${APP_DIR}/.venv/bin"
  printf '#!/bin/bash\ntouch "%s"\nexec "%s" "$@"\n' "${BATS_TEST_TMPDIR}/venv-used" "${REAL_PYTHON}" \
    >"${APP_DIR}/.venv/bin/python"
  chmod +x "${APP_DIR}/.venv/bin/python"
  local state="${BATS_TEST_TMPDIR}/state"
  mkdir -p "${state}"
  PIDF="${state}/api.pid"
  export PID_FILE="${PIDF}" LOG_FILE="${state}/api.log"
  unset PYTHON
  start_ok
  [ -f "${BATS_TEST_TMPDIR}/venv-used" ]
  [ -f "${PID_FILE}" ]
  grep -q "Uvicorn running" "${LOG_FILE}"
  [ ! -e "${RUN_DIR}" ]
  run "${MANAGE}" status "${APP_DIR}"
  [ "${status}" -eq 0 ]
  run "${MANAGE}" stop "${APP_DIR}"
  [ "${status}" -eq 0 ]
  [ ! -e "${PID_FILE}" ]
}

@test "TARGET=sandbox starts APP_DIR's emulator and serves against it with that sandbox's database; a bad TARGET is a usage error" {
  # The real AWS CLI: the sandbox makes its key pair with it, and the server serves against the emulator.
  if [[ -n "${ORIG_AWS_CLI}" ]]; then export AWS_CLI="${ORIG_AWS_CLI}"; else unset AWS_CLI; fi
  ln -s -- "${REPO_ROOT}/scripts" "${APP_DIR}/scripts"
  ln -s -- "${REPO_ROOT}/.venv" "${APP_DIR}/.venv"
  local sport
  sport="$(free_port)"
  run --separate-stderr env TARGET=sandbox SANDBOX_PORT="${sport}" "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}"
  # The emulator is killed in teardown whatever happens below.
  cat "${APP_DIR}/data/sandbox/${sport}/moto.pid" >>"${BATS_TEST_TMPDIR}/spawned" 2>/dev/null || true
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"targets SANDBOX (http://127.0.0.1:${sport},"*"database "*"/data/sandbox/${sport}/instances.db"* ]]
  # The budget in force: the sandbox's, as make run's (BUDGET_USD is unset here).
  [[ "${output}" == *"; budget 100.00 USD a month (SANDBOX_BUDGET_USD, BUDGET_USD unset);"* ]]
  [ -f "${APP_DIR}/data/sandbox/${sport}/instances.db" ]
  SANDBOX_PORT="${sport}" "${APP_DIR}/scripts/sandbox.sh" stop >/dev/null

  run --separate-stderr env TARGET=bogus "${MANAGE}" start "${APP_DIR}" 127.0.0.1 "${PORT}"
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == *"TARGET must be sandbox, aws or empty"* ]]
}
