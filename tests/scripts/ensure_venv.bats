#!/usr/bin/env bats
# Tests for scripts/ensure_venv.sh: the venv is reused while requirements*.txt
# are unchanged and rebuilt when they change. The requirements install nothing
# and pip may not use an index, so no package is downloaded. The venvs are made
# without ensurepip, with a copy of PYTHON_BOOT's pip (helpers/venv_boot.bash).

bats_require_minimum_version 1.5.0

load helpers/venv_boot

setup_file() {
  fast_venv_boot
}

setup() {
  REPO_ROOT="$(cd -- "${BATS_TEST_DIRNAME}/../.." && pwd)"
  ENSURE="${REPO_ROOT}/scripts/ensure_venv.sh"
  APP="${BATS_TEST_TMPDIR}/app"
  mkdir -p "${APP}"
  echo "# runtime: nothing" >"${APP}/requirements.txt"
  printf -- '-r requirements.txt\n# dev: nothing\n' >"${APP}/requirements-dev.txt"
  export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
  export PYTHON_BOOT="${PYTHON_BOOT:-python3}"
  unset VENV REQUIREMENTS
}

@test "creates the venv, reuses it while the requirements are unchanged, rebuilds it when they change" {
  run "${ENSURE}" "${APP}"
  echo "${output}"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"creating"* ]]
  [ -x "${APP}/.venv/bin/python" ]
  [ -f "${APP}/.venv/.installed" ]
  touch "${APP}/.venv/marker"

  # Unchanged (a new mtime alone is no change): reused as is.
  touch "${APP}/requirements.txt"
  run "${ENSURE}" "${APP}"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"reusing"* ]]
  [ -f "${APP}/.venv/marker" ]

  # Changed: rebuilt from scratch.
  echo "# a new pin" >>"${APP}/requirements.txt"
  run "${ENSURE}" "${APP}"
  echo "${output}"
  [ "${status}" -eq 0 ]
  [[ "${output}" == *"rebuilding"* ]]
  [ ! -e "${APP}/.venv/marker" ]
  [ -x "${APP}/.venv/bin/python" ]
  run "${ENSURE}" "${APP}"
  [[ "${output}" == *"reusing"* ]]
}

@test "a failed install is not taken for a complete venv" {
  echo "surely-not-a-package-xyz==1.0" >>"${APP}/requirements-dev.txt"
  run "${ENSURE}" "${APP}"
  [ "${status}" -ne 0 ]
  [ ! -e "${APP}/.venv/.requirements.sha256" ]
  run "${ENSURE}" "${APP}"
  [ "${status}" -ne 0 ]
  [[ "${output}" != *"reusing"* ]]
}

@test "never deletes a directory that is not a virtualenv" {
  mkdir -p "${APP}/.venv"
  touch "${APP}/.venv/precious"
  run --separate-stderr "${ENSURE}" "${APP}"
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"not a virtualenv"* ]]
  [ -f "${APP}/.venv/precious" ]
}
