#!/usr/bin/env bash
#
# Start, stop and check the EC2 Creator Local API server (uvicorn), by hand or
# from the Jenkins manage job, so that the server outlives the job that
# started it and no process that is not ours is ever signalled.
#
#   scripts/manage_server.sh {start|stop|status|restart} [APP_DIR] [HOST] [PORT]
#
# Exit codes follow the LSB init-script conventions (like start-stop-daemon);
# see usage(). Linux only: processes are identified through /proc.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/.." && pwd)"
readonly REPO_ROOT
# shellcheck source=SCRIPTDIR/lib.sh
source "${SCRIPT_DIR}/lib.sh"

readonly DEFAULT_HOST="127.0.0.1"
readonly DEFAULT_PORT=8000
readonly DEFAULT_START_TIMEOUT=30
readonly DEFAULT_STOP_TIMEOUT=10
readonly KILL_WAIT_S=5
readonly LAUNCH_WAIT_S=5
readonly POLL_INTERVAL_S=0.2
readonly PROBE_TIMEOUT_S=2
readonly LOG_TAIL_LINES=30
readonly APP_MODULE="app.main:app"
readonly PROG="${0##*/}"

readonly EXIT_NO_PERMISSION=4
readonly STATUS_RUNNING=0
readonly STATUS_DEAD=1
readonly STATUS_NOT_RUNNING=3
readonly STATUS_UNKNOWN=4

# Jenkins' ProcessTreeKiller ends every process whose environment carries the
# build's characteristic variables when the build ends: the server gets none.
readonly JENKINS_BUILD_VARS=(
  JENKINS_NODE_COOKIE JENKINS_SERVER_COOKIE HUDSON_COOKIE HUDSON_SERVER_COOKIE
  BUILD_ID BUILD_NUMBER BUILD_TAG BUILD_URL BUILD_DISPLAY_NAME
  JOB_NAME JOB_BASE_NAME JOB_URL EXECUTOR_NUMBER
  RUN_DISPLAY_URL RUN_ARTIFACTS_DISPLAY_URL RUN_CHANGES_DISPLAY_URL RUN_TESTS_DISPLAY_URL
)

# Runs in the new session: records its own pid (kept by exec), closes every
# descriptor it inherited beyond stdin/stdout/stderr (a held pipe would keep
# the caller waiting; the lock must not outlive this script), then becomes
# the server.
# shellcheck disable=SC2016  # expanded by the launched bash, not here
readonly LAUNCHER='printf "%s\n" "$$" >"$1" || exit 1
shift
for fd in /proc/self/fd/*; do
  fd="${fd##*/}"
  if ((fd > 2)); then exec {fd}>&-; fi
done
exec "$@"'

# Settings, filled in by parse_settings (PID_FILE, LOG_FILE, START_TIMEOUT,
# STOP_TIMEOUT and PYTHON may come from the environment).
APP_DIR=""
HOST=""
PORT=""
STAMP_FILE=""
LOCK_FILE=""

# What find_server found.
STATE=""        # absent|invalid|unreadable|dead|foreign|unknown|ours
STATE_DETAIL=""
SERVER_PID=""
SERVER_START=""
SERVER_HOST=""
SERVER_PORT=""

usage() {
  cat <<USAGE
Usage: ${PROG} {start|stop|status|restart} [APP_DIR] [HOST] [PORT]

Manage the EC2 Creator Local API server: "\$PYTHON -m uvicorn ${APP_MODULE}"
run from APP_DIR, detached so that it survives the Jenkins job that starts it.

Arguments (an empty one takes the default):
  APP_DIR   the checkout to serve (default: ${REPO_ROOT})
  HOST      address to listen on (default: ${DEFAULT_HOST}); any non-loopback
            address needs API_TOKEN (or API_TOKENS_FILE) set in the environment
            or in APP_DIR/.env
  PORT      TCP port (default: ${DEFAULT_PORT})

Commands and exit codes:
  start     start the server and wait until /health answers; 0 if it does or
            if it was already running, 1 on failure (the log tail is printed)
  stop      SIGTERM, then SIGKILL after STOP_TIMEOUT; 0 if stopped or not running
  status    0 running and /health answers, 1 PID file names a dead process (or
            one that is not this server), 3 not running, 4 cannot tell
            (running but unhealthy, unreadable PID file, no permission)
  restart   stop if running, then start
  Usage errors exit 2; stop exits 4 when the server belongs to another user.

Environment:
  PID_FILE       default APP_DIR/data/run/server.pid (a .starttime file and a
                 .lock file are kept beside it)
  LOG_FILE       server output, default APP_DIR/data/run/server.log
  START_TIMEOUT  seconds to wait for /health, default ${DEFAULT_START_TIMEOUT}
  STOP_TIMEOUT   seconds between SIGTERM and SIGKILL, default ${DEFAULT_STOP_TIMEOUT}
  PYTHON         default APP_DIR/.venv/bin/python if present, else python3
  API_TOKEN      required to listen on a non-loopback HOST (or API_TOKENS_FILE)
  TARGET         sandbox: start APP_DIR's local EC2 emulator (scripts/sandbox.sh,
                 on SANDBOX_PORT, default 5055) and serve against it, with fake
                 credentials and that sandbox's database and key (make run's
                 settings); aws: your real account (EC2_TARGET=aws, so a left-over
                 EC2_ENDPOINT_URL is refused); empty: the environment decides
The server gets this environment (EC2_ENDPOINT_URL, DATABASE_URL, ...)
without Jenkins' build variables (JENKINS_NODE_COOKIE, BUILD_ID, ...).
USAGE
}

info() {
  printf '%s: %s\n' "${PROG}" "$*"
}

#######################################
# Parse the arguments and environment into the settings globals.
# Arguments:
#   The script's arguments after the command.
#######################################
parse_settings() {
  local app_dir_arg
  if (($# > 3)); then
    usage_error "too many arguments"
  fi
  app_dir_arg="${1:-${REPO_ROOT}}"
  HOST="${2:-${DEFAULT_HOST}}"
  PORT="${3:-${DEFAULT_PORT}}"

  if [[ ! -d "${app_dir_arg}" ]] || ! APP_DIR="$(cd -P -- "${app_dir_arg}" && pwd)"; then
    usage_error "APP_DIR is not a directory: '${app_dir_arg}'"
  fi
  if [[ ! -f "${APP_DIR}/app/main.py" ]]; then
    usage_error "APP_DIR does not hold the app (no app/main.py): '${APP_DIR}'"
  fi
  if [[ ! "${HOST}" =~ ^[A-Za-z0-9.:_-]{1,253}$ || "${HOST}" == -* ]]; then
    usage_error "HOST must be an IP address or host name, not '${HOST}'"
  fi
  if [[ ! "${PORT}" =~ ^[0-9]{1,5}$ ]] || ((10#${PORT} < 1 || 10#${PORT} > 65535)); then
    usage_error "PORT must be a number from 1 to 65535, not '${PORT}'"
  fi
  PORT="$((10#${PORT}))"

  START_TIMEOUT="${START_TIMEOUT:-${DEFAULT_START_TIMEOUT}}"
  STOP_TIMEOUT="${STOP_TIMEOUT:-${DEFAULT_STOP_TIMEOUT}}"
  if [[ ! "${START_TIMEOUT}" =~ ^[0-9]{1,5}$ ]] || ((10#${START_TIMEOUT} < 1)); then
    usage_error "START_TIMEOUT must be a whole number of seconds >= 1, not '${START_TIMEOUT}'"
  fi
  if [[ ! "${STOP_TIMEOUT}" =~ ^[0-9]{1,5}$ ]]; then
    usage_error "STOP_TIMEOUT must be a whole number of seconds, not '${STOP_TIMEOUT}'"
  fi
  START_TIMEOUT="$((10#${START_TIMEOUT}))"
  STOP_TIMEOUT="$((10#${STOP_TIMEOUT}))"

  TARGET="${TARGET:-}"
  case "${TARGET}" in
    "" | sandbox | aws) ;;
    *) usage_error "TARGET must be sandbox, aws or empty, not '${TARGET}'" ;;
  esac

  PID_FILE="${PID_FILE:-${APP_DIR}/data/run/server.pid}"
  LOG_FILE="${LOG_FILE:-${APP_DIR}/data/run/server.log}"
  STAMP_FILE="${PID_FILE}.starttime"
  LOCK_FILE="${PID_FILE}.lock"
  if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "${APP_DIR}/.venv/bin/python" ]]; then
      PYTHON="${APP_DIR}/.venv/bin/python"
    else
      PYTHON="python3"
    fi
  fi
}

#######################################
# Succeed if HOST only accepts connections from this machine.
#######################################
is_loopback() {
  [[ "$1" == "localhost" || "$1" == "ip6-localhost" || "$1" == "::1" \
    || "$1" =~ ^127(\.[0-9]{1,3}){3}$ ]]
}

#######################################
# Succeed if API_TOKEN or API_TOKENS_FILE (a token per person) is set in the
# environment or in APP_DIR/.env.
#######################################
api_token_configured() {
  [[ -n "${API_TOKEN:-}" || -n "${API_TOKENS_FILE:-}" ]] && return 0
  [[ -r "${APP_DIR}/.env" ]] \
    && grep -Eiq '^[[:space:]]*(export[[:space:]]+)?API_TOKEN(S_FILE)?[[:space:]]*=[[:space:]]*["'\'']?[^[:space:]"'\'']' \
      -- "${APP_DIR}/.env"
}

# url_host HOST: the host part of a URL that reaches a server bound to HOST.
url_host() {
  case "$1" in
    0.0.0.0) printf '127.0.0.1' ;;
    ::) printf '[::1]' ;;
    *:*) printf '[%s]' "$1" ;;
    *) printf '%s' "$1" ;;
  esac
}

# public_url HOST PORT PATH: the URL to show people.
public_url() {
  local host="$1"
  if [[ "${host}" == "0.0.0.0" || "${host}" == "::" ]]; then
    host="${HOSTNAME:-$(uname -n)}"
  elif [[ "${host}" == *:* ]]; then
    host="[${host}]"
  fi
  printf 'http://%s:%s%s' "${host}" "$2" "$3"
}

#######################################
# Succeed if GET /health on the server bound to HOST:PORT answers 2xx.
#######################################
health_ok() {
  http_ok "http://$(url_host "$1"):$2/health" "${PROBE_TIMEOUT_S}" "${PYTHON}"
}

#######################################
# Read PID_FILE and identify the process it names; set STATE, STATE_DETAIL,
# SERVER_PID, SERVER_START, SERVER_HOST and SERVER_PORT. The process is "ours"
# only if it runs "<python> -m uvicorn app.main:app" with APP_DIR as its
# working directory and has the pid and start time that start recorded in
# STAMP_FILE (so a reused pid, or a PID file someone else wrote, is not).
#######################################
find_server() {
  local content stamp argv=() i
  STATE="" STATE_DETAIL="" SERVER_PID="" SERVER_START="" SERVER_HOST="" SERVER_PORT=""
  local dir
  dir="$(dirname -- "${PID_FILE}")"
  while [[ ! -e "${dir}" && "${dir}" != / && "${dir}" != . ]]; do  # the nearest folder we can see
    dir="$(dirname -- "${dir}")"
  done
  if [[ -d "${dir}" && ! -x "${dir}" ]]; then  # private to its owner: not ours to judge
    STATE="unknown"
    STATE_DETAIL="no permission to look into ${dir} (owner: $(stat -c %U -- "${dir}" 2>/dev/null || echo '?'))"
    return 0
  fi
  if [[ ! -e "${PID_FILE}" && ! -L "${PID_FILE}" ]]; then
    STATE="absent"
    return 0
  fi
  if [[ -L "${PID_FILE}" ]]; then  # never followed; removing it removes the link only
    STATE="invalid" STATE_DETAIL="PID file ${PID_FILE} is a symbolic link"
    return 0
  fi
  if [[ ! -f "${PID_FILE}" ]]; then
    STATE="unreadable" STATE_DETAIL="PID file ${PID_FILE} is not a regular file"
    return 0
  fi
  if ! content="$(head -c 65 -- "${PID_FILE}" 2>/dev/null)"; then
    STATE="unreadable" STATE_DETAIL="cannot read PID file ${PID_FILE}"
    return 0
  fi
  if ((${#content} > 64)); then
    STATE="invalid" STATE_DETAIL="PID file ${PID_FILE} is too long to hold a process id"
    return 0
  fi
  if [[ ! "${content}" =~ ^[[:space:]]*([1-9][0-9]{0,9})[[:space:]]*$ ]]; then
    STATE="invalid" STATE_DETAIL="PID file ${PID_FILE} does not hold a process id"
    return 0
  fi
  SERVER_PID="${BASH_REMATCH[1]}"

  if ! SERVER_START="$(proc_starttime "${SERVER_PID}")"; then
    STATE="dead" STATE_DETAIL="pid ${SERVER_PID} from ${PID_FILE} is not running"
    return 0
  fi
  if ! mapfile -d '' -t argv <"/proc/${SERVER_PID}/cmdline" 2>/dev/null; then
    STATE="unknown" STATE_DETAIL="cannot read the command line of pid ${SERVER_PID}"
    return 0
  fi
  if ((${#argv[@]} < 4)) || [[ "${argv[0]##*/}" != python* || "${argv[1]}" != "-m" \
    || "${argv[2]}" != "uvicorn" || "${argv[3]}" != "${APP_MODULE}" ]]; then
    STATE="foreign" STATE_DETAIL="pid ${SERVER_PID} from ${PID_FILE} is not this app's uvicorn"
    return 0
  fi
  if ! content="$(readlink -- "/proc/${SERVER_PID}/cwd" 2>/dev/null)"; then
    STATE="unknown" STATE_DETAIL="no permission to inspect pid ${SERVER_PID} (owner: $(stat -c %U -- "/proc/${SERVER_PID}" 2>/dev/null || echo '?'))"
    return 0
  fi
  if [[ "${content}" != "${APP_DIR}" ]]; then
    STATE="foreign" STATE_DETAIL="pid ${SERVER_PID} serves another checkout (${content})"
    return 0
  fi
  stamp="$(head -c 64 -- "${STAMP_FILE}" 2>/dev/null || true)"
  if [[ "${stamp}" != "${SERVER_PID} ${SERVER_START}" ]]; then
    STATE="foreign"
    STATE_DETAIL="pid ${SERVER_PID} is not the process that start recorded in ${STAMP_FILE}"
    return 0
  fi
  for ((i = 4; i + 1 < ${#argv[@]}; i++)); do
    case "${argv[i]}" in
      --host) SERVER_HOST="${argv[i + 1]}" ;;
      --port) SERVER_PORT="${argv[i + 1]}" ;;
    esac
  done
  SERVER_HOST="${SERVER_HOST:-${DEFAULT_HOST}}"
  SERVER_PORT="${SERVER_PORT:-${DEFAULT_PORT}}"
  STATE="ours"
}

remove_state_files() {
  rm -f -- "${PID_FILE}" "${STAMP_FILE}"
}

# write_file_atomically FILE CONTENT: readers see the old file or the new one.
write_file_atomically() {
  local tmp
  tmp="$(mktemp -- "$1.XXXXXX")"
  if ! printf '%s\n' "$2" >"${tmp}" || ! chmod 600 -- "${tmp}" || ! mv -fT -- "${tmp}" "$1"; then
    rm -f -- "${tmp}"
    die "cannot write $1"
  fi
}

#######################################
# Take the lock that serialises start/stop/restart (fd 9, released on exit).
#######################################
take_lock() {
  local wait_s=$((START_TIMEOUT + STOP_TIMEOUT + KILL_WAIT_S + 10))
  if ! { exec 9>>"${LOCK_FILE}"; } 2>/dev/null; then
    die "cannot open lock file ${LOCK_FILE} (run this as the user that owns $(dirname -- "${LOCK_FILE}"))" \
      "${EXIT_NO_PERMISSION}"
  fi
  if ! flock -w "${wait_s}" 9; then
    die "another ${PROG} holds ${LOCK_FILE} for more than ${wait_s} s"
  fi
}

# wait_gone PID STARTTIME SECONDS: succeed once the process has exited.
# (Deadlines compare whole seconds with ">": the wait lasts SECONDS to SECONDS + 1.)
wait_gone() {
  local deadline=$((SECONDS + $3))
  while same_process "$1" "$2"; do
    if ((SECONDS > deadline)); then
      return 1
    fi
    sleep "${POLL_INTERVAL_S}"
  done
}

#######################################
# Stop process PID, known to be our server started at STARTTIME: SIGTERM,
# wait STOP_TIMEOUT, then SIGKILL (its process group too: it leads a session
# of its own, so the group holds only what the server started).
#######################################
terminate() {
  local pid="$1" start="$2"
  if ! kill -TERM "${pid}" 2>/dev/null; then
    if same_process "${pid}" "${start}"; then
      die "not permitted to signal pid ${pid} (owner: $(stat -c %U -- "/proc/${pid}" 2>/dev/null || echo '?')); run this as that user" \
        "${EXIT_NO_PERMISSION}"
    fi
    return 0
  fi
  if wait_gone "${pid}" "${start}" "${STOP_TIMEOUT}"; then
    return 0
  fi
  err "pid ${pid} did not exit within ${STOP_TIMEOUT} s of SIGTERM; sending SIGKILL"
  same_process "${pid}" "${start}" || return 0
  if [[ "$(awk '{ sub(/.*\) /, ""); print $3 }' "/proc/${pid}/stat" 2>/dev/null)" == "${pid}" ]]; then
    kill -KILL -- "-${pid}" 2>/dev/null || true
  fi
  kill -KILL "${pid}" 2>/dev/null || true
  wait_gone "${pid}" "${start}" "${KILL_WAIT_S}" || die "pid ${pid} is still alive after SIGKILL"
}

#######################################
# Stop the server named by PID_FILE if it is ours; clear stale state.
#######################################
do_stop() {
  find_server
  case "${STATE}" in
    absent)
      info "not running (no PID file ${PID_FILE})"
      ;;
    ours)
      terminate "${SERVER_PID}" "${SERVER_START}"
      remove_state_files
      info "stopped (pid ${SERVER_PID})"
      ;;
    dead | foreign | invalid)
      remove_state_files
      info "not running; removed the stale PID file (${STATE_DETAIL}; nothing signalled)"
      ;;
    unknown)
      die "cannot tell whether the server runs: ${STATE_DETAIL}; nothing signalled" \
        "${EXIT_NO_PERMISSION}"
      ;;
    *)
      die "cannot tell whether the server runs: ${STATE_DETAIL}; nothing signalled"
      ;;
  esac
}

#######################################
# Fail unless HOST:PORT can be bound (the way uvicorn binds it).
#######################################
check_port_free() {
  local why holder
  if why="$("${PYTHON}" - "${HOST}" "${PORT}" <<'PY' 2>&1
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sys.exit(exc.strerror or str(exc))
PY
  )"; then
    return 0
  fi
  if [[ "${why}" == *"in use"* ]]; then
    holder="$(ss -Hltnp "sport = :${PORT}" 2>/dev/null | head -n 3 || true)"
    die "port ${PORT} on ${HOST} is already in use${holder:+ by:
${holder}}
Stop what holds it or choose another PORT (see: ss -ltnp 'sport = :${PORT}')."
  fi
  die "cannot listen on ${HOST}:${PORT}: ${why}"
}

# print_log_tail OFFSET: what the server wrote to LOG_FILE since OFFSET.
print_log_tail() {
  err "last lines of ${LOG_FILE}:"
  tail -c "+$(($1 + 1))" -- "${LOG_FILE}" 2>/dev/null | tail -n "${LOG_TAIL_LINES}" >&2 || true
}

#######################################
# Launch the server detached and wait until /health answers.
#######################################
launch() {
  local unset_args=() var log_offset pid_tmp pid="" start deadline
  for var in "${JENKINS_BUILD_VARS[@]}"; do
    unset_args+=(-u "${var}")
  done
  mkdir -p -- "$(dirname -- "${LOG_FILE}")"
  log_offset="$(stat -c %s -- "${LOG_FILE}" 2>/dev/null || echo 0)"
  printf '=== %s %s start: %s -m uvicorn %s --host %s --port %s (in %s)\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${PROG}" "${PYTHON}" "${APP_MODULE}" "${HOST}" "${PORT}" \
    "${APP_DIR}" >>"${LOG_FILE}"
  pid_tmp="$(mktemp -- "${PID_FILE}.launch.XXXXXX")"

  # A new session (no terminal, not in the caller's process group), stdin
  # from /dev/null, output to the log, reparented to init at once (setsid
  # --fork), and no Jenkins build variables.
  (cd -- "${APP_DIR}" \
    && exec env "${unset_args[@]}" setsid --fork bash -c "${LAUNCHER}" launcher "${pid_tmp}" \
      "${PYTHON}" -m uvicorn "${APP_MODULE}" --host "${HOST}" --port "${PORT}") \
    </dev/null >>"${LOG_FILE}" 2>&1 9>&-

  deadline=$((SECONDS + LAUNCH_WAIT_S))
  until [[ "${pid}" =~ ^[1-9][0-9]*$ ]]; do
    if ((SECONDS > deadline)); then
      rm -f -- "${pid_tmp}"
      print_log_tail "${log_offset}"
      die "the server process did not start"
    fi
    sleep "${POLL_INTERVAL_S}"
    pid="$(head -n 1 -- "${pid_tmp}" 2>/dev/null || true)"
  done
  rm -f -- "${pid_tmp}"
  if ! start="$(proc_starttime "${pid}")"; then
    print_log_tail "${log_offset}"
    die "the server exited at once (log: ${LOG_FILE})"
  fi
  write_file_atomically "${STAMP_FILE}" "${pid} ${start}"
  write_file_atomically "${PID_FILE}" "${pid}"

  deadline=$((SECONDS + START_TIMEOUT))
  until health_ok "${HOST}" "${PORT}" && same_process "${pid}" "${start}"; do
    if ! same_process "${pid}" "${start}"; then
      remove_state_files
      print_log_tail "${log_offset}"
      die "the server exited during start-up (log: ${LOG_FILE})"
    fi
    if ((SECONDS > deadline)); then
      err "no answer from $(public_url "${HOST}" "${PORT}" /health) within ${START_TIMEOUT} s; stopping pid ${pid}"
      terminate "${pid}" "${start}"
      remove_state_files
      print_log_tail "${log_offset}"
      die "the server did not become healthy (log: ${LOG_FILE})"
    fi
    sleep "${POLL_INTERVAL_S}"
  done
  info "started (pid ${pid}): $(public_url "${HOST}" "${PORT}" "") answers /health"
  print_target "${log_offset}"
  info "API docs: $(public_url "${HOST}" "${PORT}" /docs)"
  info "log: ${LOG_FILE}"
}

#######################################
# Say which EC2 the server just started talks to and which database it
# keeps, as its own start-up line says (SANDBOX and the emulator, or AWS and
# the region): real AWS must never be a surprise.
# Arguments:
#   LOG_OFFSET  where this start's lines begin in LOG_FILE
#######################################
print_target() {
  local line
  line="$(tail -c "+$(($1 + 1))" -- "${LOG_FILE}" 2>/dev/null \
    | grep -o -m 1 'EC2 Creator Local targets [^"]*' || true)"
  if [[ -n "${line}" ]]; then
    info "${line#EC2 Creator Local }"
  fi
}

#######################################
# Start the server unless ours already runs at HOST:PORT.
#######################################
do_start() {
  find_server
  case "${STATE}" in
    ours)
      if [[ "${SERVER_HOST}" != "${HOST}" || "${SERVER_PORT}" != "${PORT}" ]]; then
        die "already running (pid ${SERVER_PID}) on ${SERVER_HOST}:${SERVER_PORT}, not ${HOST}:${PORT}; use 'restart' to move it"
      fi
      if ! health_ok "${SERVER_HOST}" "${SERVER_PORT}"; then
        die "already running (pid ${SERVER_PID}) but /health does not answer; use 'restart' (log: ${LOG_FILE})"
      fi
      info "already running (pid ${SERVER_PID}): $(public_url "${HOST}" "${PORT}" "")"
      info "API docs: $(public_url "${HOST}" "${PORT}" /docs)"
      return 0
      ;;
    dead | foreign | invalid)
      info "ignoring the stale PID file (${STATE_DETAIL})"
      remove_state_files
      ;;
    unknown | unreadable)
      die "cannot tell whether the server runs: ${STATE_DETAIL}"
      ;;
  esac
  if ! command -v -- "${PYTHON}" >/dev/null 2>&1; then
    die "python not found: '${PYTHON}' (run 'make venv' or the build job in ${APP_DIR}, or set PYTHON)"
  fi
  check_port_free
  launch
}

cmd_status() {
  find_server
  case "${STATE}" in
    absent)
      info "not running (no PID file ${PID_FILE})"
      return "${STATUS_NOT_RUNNING}"
      ;;
    dead | foreign)
      info "not running, but the PID file remains (${STATE_DETAIL})"
      return "${STATUS_DEAD}"
      ;;
    ours)
      if health_ok "${SERVER_HOST}" "${SERVER_PORT}"; then
        info "running (pid ${SERVER_PID}): $(public_url "${SERVER_HOST}" "${SERVER_PORT}" "") answers /health"
        return "${STATUS_RUNNING}"
      fi
      info "running (pid ${SERVER_PID}) but $(public_url "${SERVER_HOST}" "${SERVER_PORT}" /health) does not answer (log: ${LOG_FILE})"
      return "${STATUS_UNKNOWN}"
      ;;
    *)
      info "cannot tell: ${STATE_DETAIL}"
      return "${STATUS_UNKNOWN}"
      ;;
  esac
}

#######################################
# TARGET=sandbox: start APP_DIR's emulator and export make run's sandbox
# settings (endpoint, fake credentials, the port's database and key) for the
# server; TARGET=aws: EC2_TARGET=aws. Nothing for an empty TARGET.
#######################################
apply_target() {
  local dir
  case "${TARGET}" in
    aws) export EC2_TARGET=aws ;;
    sandbox)
      SANDBOX_PORT="${SANDBOX_PORT:-5055}" "${APP_DIR}/scripts/sandbox.sh" start || die "the sandbox did not start"
      dir="$(SANDBOX_PORT="${SANDBOX_PORT:-5055}" "${APP_DIR}/scripts/sandbox.sh" dir)"
      unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN
      export EC2_TARGET=sandbox EC2_ENDPOINT_URL="http://127.0.0.1:${SANDBOX_PORT:-5055}" \
        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
        AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" \
        DATABASE_URL="${SANDBOX_DATABASE_URL:-${dir}/instances.db}" \
        SSH_KEY_PATH="${SANDBOX_SSH_KEY_PATH:-${dir}/my_ec2_keypair.pem}"
      ;;
  esac
}

# Refuse, before anything else, to expose the API without a token.
check_exposure() {
  if ! is_loopback "${HOST}" && ! api_token_configured; then
    die "refusing to listen on ${HOST}: a non-loopback address needs an API token.
Set API_TOKEN, at least 16 characters: export API_TOKEN=\"\$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\"
(or API_TOKEN=... in ${APP_DIR}/.env; in Jenkins, the manage job binds it from a 'Secret text'
credential with withCredentials), or listen on ${DEFAULT_HOST}."
  fi
}

main() {
  # Logs, PID files, keys and databases made from here on are the user's alone.
  umask 077
  local cmd="${1:-}"
  case "${cmd}" in
    -h | --help)
      usage
      exit 0
      ;;
    start | stop | status | restart) ;;
    "") usage_error "a command is required" ;;
    *) usage_error "unknown command: '${cmd}'" ;;
  esac
  shift
  parse_settings "$@"

  case "${cmd}" in
    status)
      cmd_status
      ;;
    stop)
      # Nothing to stop, and nothing to create, if the run directory is absent (and not just hidden).
      find_server
      if [[ "${STATE}" == absent && ! -d "$(dirname -- "${PID_FILE}")" ]]; then
        info "not running (no PID file ${PID_FILE})"
        exit 0
      fi
      take_lock
      do_stop
      ;;
    start | restart)
      check_exposure
      mkdir -p -- "$(dirname -- "${PID_FILE}")"
      take_lock
      if [[ "${cmd}" == "restart" ]]; then
        do_stop
      fi
      apply_target
      do_start
      ;;
  esac
}

main "$@"
