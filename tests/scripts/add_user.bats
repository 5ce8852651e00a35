#!/usr/bin/env bats
# Tests for scripts/add_user.sh: a new token is printed once, only its SHA-256 is kept, in a file the
# server reads as API_TOKENS_FILE (checked here with the server's own reader, app/auth/tokens.py).

bats_require_minimum_version 1.5.0

setup() {
  REPO_ROOT="$(cd -- "${BATS_TEST_DIRNAME}/../.." && pwd)"
  ADD_USER="${REPO_ROOT}/scripts/add_user.sh"
  WORK="${BATS_TEST_TMPDIR}/work"
  mkdir -p "${WORK}"
  cd "${WORK}" || return
  unset API_TOKENS_FILE PYTHON
  PY="${REPO_ROOT}/.venv/bin/python"
  [[ -x "${PY}" ]] || PY=python3
}

# The people of FILE as the server reads them: "name role sha256" lines.
server_reads() {
  "${PY}" -c 'import sys
sys.path.insert(0, sys.argv[1])
from app.auth.tokens import load_users
for u in load_users(sys.argv[2]):
    print(u.name, u.role, u.sha256.hex())' "${REPO_ROOT}" "$1"
}

sha256_of() {
  printf '%s' "$1" | sha256sum | cut -d ' ' -f 1
}

@test "-h prints usage; bad arguments exit 2 and write nothing" {
  run "${ADD_USER}" -h
  [ "${status}" -eq 0 ]
  [[ "${output}" == Usage:* ]]
  local args
  for args in "" "Alice" "al ice" "admin" "$(printf 'x%.0s' {1..65})" "alice boss" "alice user extra" \
    "alice --bogus" "alice --file" "alice --file tokens.txt"; do
    # shellcheck disable=SC2086  # the words of one case
    run --separate-stderr "${ADD_USER}" ${args}
    [ "${status}" -eq 2 ] || { echo "args: ${args} -> ${status}"; false; }
    [ -z "${output}" ]
    [[ "${stderr}" == *"add_user.sh: "* ]]
  done
  [ ! -e data ]
}

@test "prints the token once on stdout and keeps only its SHA-256, in a private file (default ./data/tokens.toml)" {
  run --separate-stderr "${ADD_USER}" alice
  [ "${status}" -eq 0 ]
  local token="${output}"
  [[ "${token}" =~ ^[A-Za-z0-9_-]{43}$ ]]
  [[ "${stderr}" == *"added alice (user)"* && "${stderr}" == *"shown this once"* ]]
  [[ "${stderr}" != *"${token}"* ]]
  [ -f data/tokens.toml ]
  [ "$(stat -c %a data/tokens.toml)" = "600" ]
  [ "$(stat -c %a data)" = "700" ]
  run ! grep -qF -- "${token}" data/tokens.toml
  [ "$(server_reads data/tokens.toml)" = "alice user $(sha256_of "${token}")" ]
  [ -z "$(find data -name '.*')" ]  # no temporary file left behind
}

@test "appends with the role asked for, and refuses a name already there" {
  local alice root
  alice="$("${ADD_USER}" alice 2>/dev/null)"
  root="$("${ADD_USER}" root admin 2>/dev/null)"
  [ "${alice}" != "${root}" ]
  run server_reads data/tokens.toml
  [ "${lines[0]}" = "alice user $(sha256_of "${alice}")" ]
  [ "${lines[1]}" = "root admin $(sha256_of "${root}")" ]
  local before
  before="$(cat data/tokens.toml)"
  run --separate-stderr "${ADD_USER}" alice admin
  [ "${status}" -eq 1 ]
  [ -z "${output}" ]
  [[ "${stderr}" == *"'alice' is already in"* ]]
  [ "$(cat data/tokens.toml)" = "${before}" ]
}

@test "API_TOKENS_FILE or --file names the file; a .json file is rewritten as JSON, keeping its mode" {
  API_TOKENS_FILE="${WORK}/people.json" "${ADD_USER}" bob >/dev/null 2>&1
  chmod 640 people.json
  local carol
  carol="$("${ADD_USER}" carol admin --file "${WORK}/people.json" 2>/dev/null)"
  "${PY}" -c 'import json, sys; doc = json.load(open(sys.argv[1])); assert [u["name"] for u in doc["users"]] == ["bob", "carol"]' \
    people.json
  [ "$(stat -c %a people.json)" = "640" ]
  run server_reads people.json
  [ "${lines[1]}" = "carol admin $(sha256_of "${carol}")" ]
  "${ADD_USER}" dave --file="${WORK}/nested/dir/t.toml" >/dev/null 2>&1
  [ "$(server_reads nested/dir/t.toml | cut -d ' ' -f 1,2)" = "dave user" ]
}

@test "a file the server could not read is left alone and no token is printed" {
  mkdir -p data
  printf '[[users]]\nname = "eve"\nsha256 = "not-a-hash"\nrole = "user"\n' >data/tokens.toml
  run --separate-stderr "${ADD_USER}" frank
  [ "${status}" -eq 1 ]
  [ -z "${output}" ]
  [[ "${stderr}" == *"sha256 must be 64 hex digits"* && "${stderr}" == *"nothing was added"* ]]
  run ! grep -q frank data/tokens.toml
}
