# shellcheck shell=bash
# GLOBAL_ARGS is used by the .bats files; status, output and stderr are set
# by bats' `run`.
# shellcheck disable=SC2034,SC2154
#
# Shared setup and assertions for the aws_cli_bash_scripts contract tests.
# Load with:  load helpers/common

HELPERS_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "${HELPERS_DIR}/../../.." && pwd)"
SCRIPTS_DIR="${REPO_ROOT}/aws_cli_bash_scripts"

# The global options aws_call puts before SERVICE OPERATION by default.
GLOBAL_ARGS=(--output json --cli-connect-timeout 5 --cli-read-timeout 30)

# Per-test setup: the fake CLI, a clean environment.
fake_aws_setup() {
  export AWS_CLI="${HELPERS_DIR}/fake_aws"
  export FAKE_AWS_ARGV="${BATS_TEST_TMPDIR}/argv"
  unset EC2_ENDPOINT_URL AWS_REGION FAKE_AWS_EXIT FAKE_AWS_STDERR KEY_NAME
  unset AWS_CLI_CONNECT_TIMEOUT AWS_CLI_READ_TIMEOUT AWS_RETRY_MODE
  unset AWS_MAX_ATTEMPTS AWS_PAGER
}

# Fail unless the fake CLI was never run.
assert_not_called() {
  if [[ -e "${FAKE_AWS_ARGV}" || -e "${FAKE_AWS_ARGV}.calls" ]]; then
    echo "the AWS CLI was called, it should not have been:" >&2
    cat "${FAKE_AWS_ARGV}" >&2
    return 1
  fi
}

# Fail unless the fake CLI was run exactly once.
assert_called_once() {
  local n=0
  if [[ -e "${FAKE_AWS_ARGV}.calls" ]]; then
    n="$(wc -l <"${FAKE_AWS_ARGV}.calls")"
  fi
  if ((n != 1)); then
    echo "expected exactly one AWS CLI call, got ${n}" >&2
    return 1
  fi
}

# assert_argv EXPECTED...
# Compare the recorded argv with EXPECTED, element by element. An expected
# element written as JSON:<json> is compared structurally (parsed on both
# sides). Also checks that the CLI was called exactly once.
assert_argv() {
  assert_called_once || return 1
  python3 - "${FAKE_AWS_ARGV}" "$@" <<'PY'
import json
import sys

path, expected = sys.argv[1], sys.argv[2:]
with open(path, encoding="utf-8", errors="surrogateescape") as f:
    actual = f.read().split("\n")
assert actual[-1] == "", "argv file must end with a newline"
actual = actual[:-1]

def fail(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.write("expected:\n  " + "\n  ".join(expected) + "\n")
    sys.stderr.write("actual:\n  " + "\n  ".join(actual) + "\n")
    sys.exit(1)

if len(actual) != len(expected):
    fail(f"argv length {len(actual)} != expected {len(expected)}")
for i, (a, e) in enumerate(zip(actual, expected)):
    if e.startswith("JSON:"):
        try:
            got = json.loads(a)
        except ValueError as exc:
            fail(f"argv[{i}] is not valid JSON ({exc}): {a!r}")
        if got != json.loads(e[5:]):
            fail(f"argv[{i}] JSON differs: {a!r}")
    elif a != e:
        fail(f"argv[{i}] {a!r} != {e!r}")
PY
}

# argv_after OPTION: print the recorded argv element that follows OPTION.
argv_after() {
  python3 - "${FAKE_AWS_ARGV}" "$1" <<'PY'
import sys
with open(sys.argv[1], encoding="utf-8", errors="surrogateescape") as f:
    argv = f.read().split("\n")[:-1]
sys.stdout.write(argv[argv.index(sys.argv[2]) + 1])
PY
}

# argv_has OPTION: succeed if OPTION appears in the recorded argv.
argv_has() {
  grep -qxF -- "$1" "${FAKE_AWS_ARGV}"
}

# refute_argv_has OPTION: fail if OPTION appears in the recorded argv.
# (A bare `! cmd` does not fail a bats test; use this instead.)
refute_argv_has() {
  if argv_has "$1"; then
    echo "argv unexpectedly contains '$1'" >&2
    return 1
  fi
}

# reset_fake_aws: forget what the fake CLI recorded.
reset_fake_aws() {
  rm -f "${FAKE_AWS_ARGV}" "${FAKE_AWS_ARGV}.calls" "${FAKE_AWS_ARGV}.env"
}

# run_script NAME ARGS...: forget earlier calls, then run
# aws_cli_bash_scripts/NAME with stdout in $output and stderr in $stderr.
run_script() {
  local name="$1"
  shift
  reset_fake_aws
  run --separate-stderr "${SCRIPTS_DIR}/${name}" "$@"
}

# assert_usage_error: the last run_script exited 2 with a message and the
# usage on stderr, nothing on stdout, and the CLI was not called.
assert_usage_error() {
  if [[ "${status}" -ne 2 ]]; then
    echo "expected exit status 2, got ${status}; stdout: ${output}; stderr: ${stderr}" >&2
    return 1
  fi
  if [[ "${stderr}" != *Usage:* || -n "${output}" ]]; then
    echo "expected usage on stderr only; stdout: ${output}; stderr: ${stderr}" >&2
    return 1
  fi
  assert_not_called
}

# assert_help: the last run_script exited 0 and printed the usage on stdout.
assert_help() {
  if [[ "${status}" -ne 0 || "${output}" != Usage:* || -n "${stderr}" ]]; then
    echo "expected usage on stdout and exit 0, got ${status}: ${output} / ${stderr}" >&2
    return 1
  fi
  assert_not_called
}

# assert_ok_output: the last run_script exited 0 and printed the fake JSON.
assert_ok_output() {
  if [[ "${status}" -ne 0 || "${output}" != '{"ok": true}' ]]; then
    echo "expected exit 0 and the CLI JSON, got ${status}: ${output} / ${stderr}" >&2
    return 1
  fi
}
