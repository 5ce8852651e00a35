#!/usr/bin/env bats
# Contract tests for scripts/system_deps.sh: what make test needs from the system, and how it says so.

bats_require_minimum_version 1.5.0

setup() {
  SCRIPT="${BATS_TEST_DIRNAME}/../../scripts/system_deps.sh"
  BASH_BIN="$(command -v bash)"
  STUBS="${BATS_TEST_TMPDIR}/bin"
  mkdir -p "${STUBS}"
  for tool in chromium java node npm curl; do
    printf '#!/bin/sh\nexit 0\n' >"${STUBS}/${tool}"
    chmod +x "${STUBS}/${tool}"
  done
  ln -s "$(command -v cat)" "${STUBS}/cat"  # usage is a here-document
  printf '#!/bin/sh\necho "aws-cli/2.9.19 Python/3.11.2 Linux"\n' >"${STUBS}/aws-v2"
  chmod +x "${STUBS}/aws-v2"
  export AWS_CLI_V2="${STUBS}/aws-v2"
  printf '#!/bin/sh\nexit 0\n' >"${STUBS}/sshd"
  chmod +x "${STUBS}/sshd"
  export SSHD="${STUBS}/sshd" PYTHON3_APT_DIR="${BATS_TEST_TMPDIR}/apt"
  mkdir -p "${PYTHON3_APT_DIR}"
  export PG_BIN="${BATS_TEST_TMPDIR}/pg/bin"
  mkdir -p "${PG_BIN}"
  printf '#!/bin/sh\nexit 0\n' >"${PG_BIN}/initdb"
}

run_deps() {
  run --separate-stderr env PATH="${STUBS}" "${BASH_BIN}" "${SCRIPT}" "$@"
}

@test "-h prints usage and exits 0; an unknown argument exits 2" {
  run_deps -h
  [ "${status}" -eq 0 ]
  [[ "${output}" == Usage:* ]]
  run_deps --bogus
  [ "${status}" -eq 2 ]
  [[ "${stderr}" == *"unknown argument --bogus"* ]]
}

@test "nothing missing: exit 0, nothing said, nothing installed" {
  run_deps
  [ "${status}" -eq 0 ]
  [ -z "${output}" ] && [ -z "${stderr}" ]
}

@test "chromium-browser counts as chromium" {
  mv "${STUBS}/chromium" "${STUBS}/chromium-browser"
  run_deps --check
  [ "${status}" -eq 0 ]
}

@test "--check with missing programs: exit 1 and the exact apt-get line, Debian package names" {
  rm "${STUBS}/chromium" "${STUBS}/java" "${STUBS}/npm"
  run_deps --check
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"sudo apt-get install -y --no-install-recommends chromium default-jre-headless npm"* ]]
}

@test "the AWS CLI v2: missing, or a v1 where AWS_CLI_V2 points, needs Debian's awscli" {
  printf '#!/bin/sh\necho "aws-cli/1.46.3 Python/3.11.7"\n' >"${STUBS}/aws-v2"
  run_deps --check
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"sudo apt-get install -y --no-install-recommends awscli"* ]]
  AWS_CLI_V2="${STUBS}/nowhere" run_deps --check
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"--no-install-recommends awscli"* ]]
}

@test "the Ansible test's SSH target: no sshd or no python3-apt needs openssh-server, python3-apt" {
  rm "${STUBS}/sshd"
  rmdir "${PYTHON3_APT_DIR}"
  run_deps --check
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"sudo apt-get install -y --no-install-recommends openssh-server python3-apt"* ]]
}

@test "the PostgreSQL suites: no initdb where PG_BIN points needs postgresql" {
  rm "${PG_BIN}/initdb"
  run_deps --check
  [ "${status}" -eq 1 ]
  [[ "${stderr}" == *"sudo apt-get install -y --no-install-recommends postgresql"* ]]
}
