#!/usr/bin/env bash
#
# Manage the local EC2 emulator (a moto server on 127.0.0.1) used as the
# "sandbox" target of ec2-creator-local.
#
#   scripts/sandbox.sh start    start it (detached) and make sure the key pair exists
#   scripts/sandbox.sh stop     stop the server this script started
#   scripts/sandbox.sh status   exit 0 if it answers, 3 if not
#   scripts/sandbox.sh url      print its URL
#   scripts/sandbox.sh dir      print its state directory
#
# Everything is per SANDBOX_PORT: each port has its own state directory (PID file, log, private key,
# and the database `make run` uses), so emulators on two ports run side by side and `stop` stops only
# the one on SANDBOX_PORT. The default port keeps SANDBOX_DIR itself (the layout from before ports
# were keyed); any other port uses SANDBOX_DIR/<port>.
#
# Every AWS CLI call made here uses fake credentials and an explicit
# --endpoint-url pointing at the emulator: it never talks to real AWS.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/.." && pwd)"
readonly REPO_ROOT
readonly PROG="${0##*/}"
# shellcheck source=SCRIPTDIR/lib.sh
source "${SCRIPT_DIR}/lib.sh"

readonly ALLOWED_HOST="127.0.0.1"
readonly DEFAULT_PORT=5055  # not 5000: macOS AirPlay listens there
readonly DEFAULT_KEY_NAME="my_ec2_keypair"
readonly START_TIMEOUT_S=20
readonly STOP_TIMEOUT_S=5
readonly POLL_INTERVAL_S=0.25
readonly PROBE_TIMEOUT_S=2
readonly STATUS_NOT_RUNNING=3
readonly PROCESS_MARKER="moto_server"

SANDBOX_HOST="${SANDBOX_HOST:-${ALLOWED_HOST}}"
SANDBOX_PORT="${SANDBOX_PORT:-${DEFAULT_PORT}}"
SANDBOX_DIR="${SANDBOX_DIR:-${REPO_ROOT}/data/sandbox}"
KEY_NAME="${KEY_NAME:-${DEFAULT_KEY_NAME}}"
if [[ -z "${MOTO_SERVER:-}" ]]; then
  if [[ -x "${REPO_ROOT}/.venv/bin/moto_server" ]]; then
    MOTO_SERVER="${REPO_ROOT}/.venv/bin/moto_server"
  else
    MOTO_SERVER="moto_server"
  fi
fi
if [[ -z "${AWS_CLI:-}" ]]; then
  if [[ -x "${REPO_ROOT}/.venv/bin/aws" ]]; then
    AWS_CLI="${REPO_ROOT}/.venv/bin/aws"
  else
    AWS_CLI="aws"
  fi
fi

usage() {
  cat <<USAGE
Usage: ${0##*/} {start|stop|status|url|dir}

Manage the local EC2 emulator (moto server) for ec2-creator-local.

Commands:
  start    start the emulator detached (no-op if it already answers) and
           make sure the key pair exists (private key in the state directory)
  stop     stop the emulator 'start' started on SANDBOX_PORT, and only that one
           (exit 0 if not running)
  status   exit 0 if the emulator on SANDBOX_PORT answers, ${STATUS_NOT_RUNNING} if not
  url      print the emulator URL
  dir      print the port's state directory (moto.pid, moto.log, KEY_NAME.pem;
           make run keeps the sandbox database instances.db there)

Each SANDBOX_PORT is a separate emulator with its own state directory:
SANDBOX_DIR for port ${DEFAULT_PORT}, SANDBOX_DIR/<port> for any other port.

Environment:
  SANDBOX_HOST   must be ${ALLOWED_HOST} (default)
  SANDBOX_PORT   default ${DEFAULT_PORT}
  SANDBOX_DIR    default <repo>/data/sandbox
  MOTO_SERVER    default <repo>/.venv/bin/moto_server, else moto_server on PATH
  AWS_CLI        default <repo>/.venv/bin/aws, else aws on PATH
  KEY_NAME       default ${DEFAULT_KEY_NAME}
USAGE
}

#######################################
# Validate the environment settings.
#######################################
check_settings() {
  if [[ "${SANDBOX_HOST}" != "${ALLOWED_HOST}" ]]; then
    die "SANDBOX_HOST must be ${ALLOWED_HOST} (the emulator is never exposed), not '${SANDBOX_HOST}'"
  fi
  if [[ ! "${SANDBOX_PORT}" =~ ^[0-9]{1,5}$ ]] \
    || ((10#${SANDBOX_PORT} < 1 || 10#${SANDBOX_PORT} > 65535)); then
    die "SANDBOX_PORT must be a port number from 1 to 65535, not '${SANDBOX_PORT}'"
  fi
  SANDBOX_PORT="$((10#${SANDBOX_PORT}))"
  if [[ ! "${KEY_NAME}" =~ ^[A-Za-z0-9_.@+=,][A-Za-z0-9_.@+=,-]{0,254}$ ]]; then
    die "invalid KEY_NAME: '${KEY_NAME}'"
  fi
  if [[ -z "${SANDBOX_DIR}" ]]; then
    die "SANDBOX_DIR must not be empty"
  fi
}

sandbox_url() {
  printf 'http://%s:%s' "${SANDBOX_HOST}" "${SANDBOX_PORT}"
}

#######################################
# Print the state directory of PORT (default SANDBOX_PORT): SANDBOX_DIR for the default port (the
# layout from before ports were keyed, kept), SANDBOX_DIR/PORT for any other.
#######################################
state_dir() {
  local port="${1:-${SANDBOX_PORT}}"
  if ((port == DEFAULT_PORT)); then
    printf '%s' "${SANDBOX_DIR}"
  else
    printf '%s/%s' "${SANDBOX_DIR}" "${port}"
  fi
}

pid_file() {
  printf '%s/moto.pid' "$(state_dir "$@")"
}

#######################################
# Succeed if GET URL/moto-api/ answers with a 2xx status (no proxy).
#######################################
is_answering() {
  http_ok "$(sandbox_url)/moto-api/" "${PROBE_TIMEOUT_S}"
}

#######################################
# Print the command line of process PID (empty if it does not exist).
#######################################
process_cmdline() {
  local pid="$1"
  if [[ -r "/proc/${pid}/cmdline" ]]; then
    tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null || true
  else
    ps -o args= -p "${pid}" 2>/dev/null || true
  fi
}

#######################################
# Print "PID STARTTIME" from the pid file of PORT (default SANDBOX_PORT) if it names the moto_server
# this script started: the same pid, the same start time (a reused pid is not ours), a moto_server
# command line on that port. Returns 1 otherwise.
#######################################
managed_pid() {
  local port="${1:-${SANDBOX_PORT}}" file content pid start cmdline
  file="$(pid_file "${port}")"
  [[ -f "${file}" && ! -L "${file}" ]] || return 1
  content="$(head -c 64 -- "${file}")"
  [[ "${content}" =~ ^([1-9][0-9]{0,9})\ ([0-9]{1,20})[[:space:]]*$ ]] || return 1
  pid="${BASH_REMATCH[1]}" start="${BASH_REMATCH[2]}"
  same_process "${pid}" "${start}" || return 1
  cmdline="$(process_cmdline "${pid}")"
  [[ "${cmdline}" == *"${PROCESS_MARKER}"* && "${cmdline} " == *" -p ${port} "* ]] || return 1
  printf '%s %s' "${pid}" "${start}"
}

#######################################
# Print, one per line, the other ports (not SANDBOX_PORT) whose emulator this script started and
# that still runs (found by their pid files under SANDBOX_DIR).
#######################################
other_running_ports() {
  local file port
  for file in "${SANDBOX_DIR}/moto.pid" "${SANDBOX_DIR}"/[1-9]*/moto.pid; do
    [[ -f "${file}" ]] || continue
    if [[ "${file}" == "${SANDBOX_DIR}/moto.pid" ]]; then
      port="${DEFAULT_PORT}"
    else
      port="${file%/moto.pid}"
      port="${port##*/}"
      if [[ ! "${port}" =~ ^[1-9][0-9]{0,4}$ ]] || ((port == DEFAULT_PORT || port > 65535)); then
        continue
      fi
    fi
    ((port != SANDBOX_PORT)) || continue
    managed_pid "${port}" >/dev/null && printf '%s\n' "${port}"
  done
  return 0
}

#######################################
# Say which other emulators started by this script still run (nothing if none).
#######################################
report_others() {
  local port
  while IFS= read -r port; do
    printf 'sandbox: another emulator runs at http://%s:%s (stop it: make sandbox-stop SANDBOX_PORT=%s)\n' \
      "${SANDBOX_HOST}" "${port}" "${port}"
  done < <(other_running_ports)
}

#######################################
# Run the AWS CLI against the emulator with fake credentials.
#######################################
emulator_aws() {
  AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing \
    AWS_SESSION_TOKEN="" \
    AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" \
    AWS_EC2_METADATA_DISABLED=true \
    AWS_PAGER="" \
    NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,${NO_PROXY}}" \
    no_proxy="127.0.0.1,localhost${no_proxy:+,${no_proxy}}" \
    "${AWS_CLI}" --endpoint-url "$(sandbox_url)" --output json \
    --cli-connect-timeout 5 --cli-read-timeout 30 "$@"
}

#######################################
# Make sure key pair KEY_NAME exists in the emulator; when it has to be
# created, write its private key to the port's state directory as KEY_NAME.pem (mode 600).
#######################################
ensure_key_pair() {
  local err_file rc=0 pem tmp
  err_file="$(state_dir)/.describe-key-pairs.err"
  emulator_aws ec2 describe-key-pairs --key-names "${KEY_NAME}" \
    >/dev/null 2>"${err_file}" || rc=$?
  if ((rc == 0)); then
    rm -f -- "${err_file}"
    pem="$(state_dir)/${KEY_NAME}.pem"
    if [[ ! -f "${pem}" ]]; then
      printf '%s: warning: key pair %s exists but %s is missing\n' \
        "${0##*/}" "${KEY_NAME}" "${pem}" >&2
    fi
    return 0
  fi
  if ! grep -q 'InvalidKeyPair.NotFound' "${err_file}"; then
    cat -- "${err_file}" >&2
    rm -f -- "${err_file}"
    die "could not check key pair ${KEY_NAME} (exit ${rc})"
  fi
  rm -f -- "${err_file}"

  pem="$(state_dir)/${KEY_NAME}.pem"
  tmp="$(umask 077 && mktemp "$(state_dir)/.${KEY_NAME}.pem.XXXXXX")"
  if ! emulator_aws ec2 create-key-pair --key-name "${KEY_NAME}" \
    --query KeyMaterial --output text >"${tmp}"; then
    rm -f -- "${tmp}"
    die "could not create key pair ${KEY_NAME}"
  fi
  chmod 600 -- "${tmp}"
  mv -f -- "${tmp}" "${pem}"
}

#######################################
# Launch moto_server detached and wait until it answers.
#######################################
launch_server() {
  local log pid waited=0 max_polls
  if ! command -v -- "${MOTO_SERVER}" >/dev/null 2>&1; then
    die "moto_server not found ('${MOTO_SERVER}'); run 'make venv' or set MOTO_SERVER"
  fi
  log="$(state_dir)/moto.log"
  # Detached: own session, no terminal, stdin from /dev/null, output to the
  # log, and no inherited descriptors of the caller (a pipe held open by the
  # server would make the caller wait for it).
  # Strict like AWS: unknown key pairs, AMIs and instance types are refused.
  MOTO_ENABLE_KEYPAIR_VALIDATION=true MOTO_ENABLE_AMI_VALIDATION=true \
    MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=true \
    setsid -- "${MOTO_SERVER}" -H "${SANDBOX_HOST}" -p "${SANDBOX_PORT}" \
    </dev/null >>"${log}" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
  pid=$!
  local start
  start="$(proc_starttime "${pid}")" || die "moto server exited at once (log: ${log})"
  printf '%s %s\n' "${pid}" "${start}" >"$(pid_file)"

  max_polls="$(awk -v t="${START_TIMEOUT_S}" -v p="${POLL_INTERVAL_S}" 'BEGIN { printf "%d", t / p }')"
  until is_answering; do
    if ! kill -0 "${pid}" 2>/dev/null; then
      rm -f -- "$(pid_file)"
      tail -n 20 -- "${log}" >&2 || true
      die "moto server exited during start-up (log: ${log})"
    fi
    if ((waited >= max_polls)); then
      stop_server >/dev/null
      tail -n 20 -- "${log}" >&2 || true
      die "moto server did not answer within ${START_TIMEOUT_S} s (log: ${log})"
    fi
    sleep "${POLL_INTERVAL_S}"
    waited=$((waited + 1))
  done
}

#######################################
# Stop the server named by the pid file, only if it is a moto_server.
#######################################
stop_server() {
  local found pid start file waited=0 max_polls
  file="$(pid_file)"
  if [[ ! -f "${file}" ]]; then
    if is_answering; then
      echo "sandbox: something answers at $(sandbox_url), but not an emulator this script started (no pid file in $(state_dir)): nothing stopped"
    else
      echo "sandbox: not running at $(sandbox_url) (no pid file in $(state_dir))"
    fi
    return 0
  fi
  if ! found="$(managed_pid)"; then
    rm -f -- "${file}"
    echo "sandbox: stale pid file removed (not the moto_server this script started; nothing signalled)"
    return 0
  fi
  pid="${found% *}" start="${found#* }"
  kill -TERM "${pid}" 2>/dev/null || true
  max_polls="$(awk -v t="${STOP_TIMEOUT_S}" -v p="${POLL_INTERVAL_S}" 'BEGIN { printf "%d", t / p }')"
  while same_process "${pid}" "${start}" && ((waited < max_polls)); do
    sleep "${POLL_INTERVAL_S}"
    waited=$((waited + 1))
  done
  if same_process "${pid}" "${start}"; then  # checked again: never SIGKILL a pid that was reused
    kill -KILL "${pid}" 2>/dev/null || true
  fi
  rm -f -- "${file}"
  echo "sandbox: moto server at $(sandbox_url) (pid ${pid}) stopped"
}

cmd_start() {
  mkdir -p -- "${SANDBOX_DIR}" "$(state_dir)"
  chmod 700 -- "${SANDBOX_DIR}" "$(state_dir)" 2>/dev/null || true
  if is_answering; then
    echo "sandbox: something already answers at $(sandbox_url)/moto-api/; not starting another server"
  else
    launch_server
  fi
  ensure_key_pair
  echo "sandbox: moto server at $(sandbox_url) (key pair ${KEY_NAME} ready)"
}

cmd_status() {
  local found rc=0
  if ! is_answering; then
    echo "sandbox: not running at $(sandbox_url)"
    rc="${STATUS_NOT_RUNNING}"
  elif found="$(managed_pid)"; then
    echo "sandbox: running at $(sandbox_url) (pid ${found% *}, state in $(state_dir))"
  else
    echo "sandbox: running at $(sandbox_url) (not started by this script: 'stop' leaves it alone)"
  fi
  report_others
  return "${rc}"
}

main() {
  # Logs, PID files, keys and databases made from here on are the user's alone.
  umask 077
  if (($# != 1)); then
    usage_error "exactly one command is required"
  fi
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    start | stop | status | url | dir) ;;
    *)
      usage_error "unknown command: '$1'"
      ;;
  esac
  check_settings
  case "$1" in
    start) cmd_start ;;
    stop)
      stop_server
      report_others
      ;;
    status) cmd_status ;;
    url) printf '%s\n' "$(sandbox_url)" ;;
    dir) printf '%s\n' "$(state_dir)" ;;
  esac
}

main "$@"
