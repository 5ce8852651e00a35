# shellcheck shell=bash
#
# Shared by the scripts of scripts/ (sourced, never executed): errors and
# usage errors, process identity (a pid is "ours" only with the start time we recorded for it), and an
# HTTP probe that works with or without curl.
#
# The sourcing script sets PROG (its name, for messages) and defines usage().

if [[ -n "${_EC2CL_SCRIPTS_LIB:-}" ]]; then
  return 0
fi
readonly _EC2CL_SCRIPTS_LIB=1

#######################################
# Print "PROG: MESSAGE" to stderr.
#######################################
err() {
  printf '%s: %s\n' "${PROG}" "$*" >&2
}

#######################################
# Print "PROG: MESSAGE" to stderr and exit with EXIT_CODE (default 1).
# Arguments:
#   MESSAGE [EXIT_CODE]
#######################################
die() {
  err "$1"
  exit "${2:-1}"
}

#######################################
# Print the error and the sourcing script's usage() to stderr; exit 2.
#######################################
usage_error() {
  err "$*"
  usage >&2
  exit 2
}

#######################################
# Print the start time (clock ticks after boot) of live process PID; fail if
# there is no such process or it is a zombie.
# Arguments:
#   PID
#######################################
proc_starttime() {
  local stat rest
  stat="$(cat -- "/proc/$1/stat" 2>/dev/null)" || return 1
  rest="${stat##*) }"  # the command name may hold spaces and parentheses
  # shellcheck disable=SC2086  # split the fields on purpose
  set -- ${rest}
  [[ "$1" != "Z" && "$1" != "X" ]] || return 1
  printf '%s' "${20}"
}

#######################################
# Succeed if PID is alive and is still the process that had STARTTIME (a reused pid is not).
# Arguments:
#   PID STARTTIME
#######################################
same_process() {
  local now
  now="$(proc_starttime "$1")" && [[ "${now}" == "$2" ]]
}

#######################################
# Succeed if GET URL answers with a 2xx status within TIMEOUT seconds (no proxy).
# Arguments:
#   URL TIMEOUT [PYTHON]  (PYTHON answers when curl is missing; default python3)
#######################################
http_ok() {
  local url="$1" timeout="$2" python="${3:-python3}"
  if command -v curl >/dev/null 2>&1; then
    curl --silent --fail --output /dev/null --noproxy '*' --max-time "${timeout}" -- "${url}"
    return
  fi
  "${python}" - "${url}" "${timeout}" <<'PY' 2>/dev/null
import sys
import urllib.request

opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=float(sys.argv[2])) as resp:
        sys.exit(0 if 200 <= resp.status < 300 else 1)
except Exception:  # noqa: BLE001 - any failure means "not answering"
    sys.exit(1)
PY
}
