#!/usr/bin/env bash
#
# Before the first real launch: would a create work? Checks, in order, the AWS CLI and the target,
# the region, credentials, the key pair and its private key file, the default VPC, the free-tier
# types and AMI aliases, the account's free plan (real AWS only), which instances' SSH rules do not
# admit this machine's current address, and the API, one line each (ok /
# warn / FAIL / skip, with the fix). Reads the server's settings and .env; never changes anything
# in AWS. Exit 0 when a create would work, 1 when not, 2 on a usage error.
#
#   scripts/doctor.sh [--api-url URL]      (make doctor [EC2_TARGET=aws])

set -euo pipefail

readonly PROG="${0##*/}"
REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly PYTHON="${REPO_ROOT}/.venv/bin/python"

usage() {
  cat <<USAGE
Usage: ${PROG} [--api-url URL]

Check the settings (environment and .env, as the server reads them), the AWS CLI, credentials,
key pair, private key, default VPC, free-tier types and AMI aliases, the free plan (AWS only)
and whether the API answers (at URL, default http://HOST:PORT, 127.0.0.1:8000). Changes nothing.
Exit status: 0 a create would work, 1 it would not, 2 usage error.
USAGE
}

main() {
  case "${1:-}" in
    -h | --help)
      usage
      return 0
      ;;
  esac
  if [[ ! -x "${PYTHON}" ]]; then
    printf '%s: %s is missing: run "make venv" first (or use "make doctor")\n' "${PROG}" "${PYTHON}" >&2
    return 1
  fi
  cd "${REPO_ROOT}"
  exec "${PYTHON}" -m app.doctor "$@"
}

main "$@"
