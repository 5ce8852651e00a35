#!/usr/bin/env bash
#
# Create the project's virtualenv, or reuse it while the requirements are
# unchanged: it is keyed by a hash of requirements*.txt and the Python version,
# and rebuilt from scratch when that hash changes (so a removed or downgraded
# package never lingers, and a stale venv is never reused).
#
#   scripts/ensure_venv.sh [APP_DIR]      (the build job's Setup stage)
#
# Environment: VENV (default APP_DIR/.venv), PYTHON_BOOT (default python3),
# REQUIREMENTS (the file pip installs, default requirements-dev.txt).

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly HASH_FILE_NAME=".requirements.sha256"
readonly MAKE_STAMP_NAME=".installed"  # the Makefile's "venv is installed" stamp
readonly PROG="${0##*/}"

usage() {
  cat <<USAGE
Usage: ${PROG} [APP_DIR]

Create APP_DIR/.venv and install REQUIREMENTS into it, unless it was built from
the same requirements*.txt and Python version (compared by hash).

Environment:
  VENV          default APP_DIR/.venv
  PYTHON_BOOT   interpreter that creates the venv, default python3
  REQUIREMENTS  file for 'pip install -r', default requirements-dev.txt
USAGE
}

die() {
  printf '%s: %s\n' "${PROG}" "$*" >&2
  exit 1
}

#######################################
# Print the hash of the Python version and of every requirements*.txt in
# APP_DIR (name and content).
#######################################
requirements_hash() {
  local app_dir="$1" file
  {
    "${PYTHON_BOOT}" -c 'import sys; print(sys.version)'
    for file in "${app_dir}"/requirements*.txt; do
      [[ -f "${file}" ]] || continue
      printf '== %s\n' "${file##*/}"
      cat -- "${file}"
    done
  } | sha256sum | cut -d ' ' -f 1
}

main() {
  local app_dir venv hash old_hash=""
  case "${1:-}" in
    -h | --help)
      usage
      exit 0
      ;;
  esac
  if (($# > 1)); then
    usage >&2
    exit 2
  fi
  app_dir="$(cd -- "${1:-${SCRIPT_DIR}/..}" && pwd)" || die "no such directory: ${1:-}"
  venv="${VENV:-${app_dir}/.venv}"
  PYTHON_BOOT="${PYTHON_BOOT:-python3}"
  local requirements="${REQUIREMENTS:-requirements-dev.txt}"
  [[ -f "${app_dir}/${requirements}" ]] || die "no ${requirements} in ${app_dir}"
  command -v -- "${PYTHON_BOOT}" >/dev/null 2>&1 || die "PYTHON_BOOT not found: ${PYTHON_BOOT}"

  hash="$(requirements_hash "${app_dir}")"
  if [[ -r "${venv}/${HASH_FILE_NAME}" ]]; then
    old_hash="$(cat -- "${venv}/${HASH_FILE_NAME}")"
  fi
  if [[ "${old_hash}" == "${hash}" ]] && "${venv}/bin/python" -c 'pass' 2>/dev/null; then
    touch -- "${venv}/${MAKE_STAMP_NAME}"
    echo "${PROG}: reusing ${venv} (requirements unchanged, ${hash:0:12})"
    return 0
  fi

  if [[ -e "${venv}" ]]; then
    # Only ever delete a virtualenv.
    [[ -f "${venv}/pyvenv.cfg" ]] || die "${venv} exists and is not a virtualenv; not touching it"
    echo "${PROG}: rebuilding ${venv} (requirements ${old_hash:0:12}${old_hash:+ -> }${hash:0:12})"
    rm -rf -- "${venv}"
  else
    echo "${PROG}: creating ${venv} (requirements ${hash:0:12})"
  fi
  "${PYTHON_BOOT}" -m venv -- "${venv}"
  (cd -- "${app_dir}" && "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "${requirements}")
  # Written last: an interrupted install is never taken for a complete one.
  printf '%s\n' "${hash}" >"${venv}/${HASH_FILE_NAME}"
  touch -- "${venv}/${MAKE_STAMP_NAME}"
  echo "${PROG}: ${venv} ready"
}

main "$@"
