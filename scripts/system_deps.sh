#!/usr/bin/env bash
#
# Check the few system programs `make test` needs that no project registry ships (Chromium for the
# Swagger UI check, Java and Node.js/npm for npm-groovy-lint, curl for the docs' tours, the AWS
# CLI v2 the tests run next to the venv's v1, sshd and python3-apt for the Ansible test's SSH
# target; PostgreSQL's server for the suites on PostgreSQL). Missing ones are installed from Debian when run as
# root with apt-get; otherwise the exact command to run is printed and the exit code is 1.
# Everything else (shellcheck, bats, the AWS CLI v1, moto) comes from PyPI and npm into the
# project's own .venv and node_modules.
#
# Environment: AWS_CLI_V2, the v2 to check (default /usr/bin/aws, Debian's awscli); SSHD (default
# /usr/sbin/sshd) and PYTHON3_APT_DIR (default /usr/lib/python3/dist-packages/apt), where they are looked for.
#
#   scripts/system_deps.sh [--check]      (--check: never install, only report)

set -euo pipefail

readonly PROG="${0##*/}"

usage() {
  cat <<USAGE
Usage: ${PROG} [--check]

Make sure chromium, java, node, npm and curl are on PATH, that AWS_CLI_V2 (default
/usr/bin/aws) is an AWS CLI v2, and that sshd and python3-apt are there (the Ansible test's SSH
target). As root with apt-get, install the missing ones from Debian (chromium,
default-jre-headless, nodejs, npm, curl, awscli, openssh-server, python3-apt, postgresql); otherwise print the
command that would and exit 1. --check only reports.
USAGE
}

#######################################
# The Debian packages providing the programs that are missing, one per line.
#######################################
missing_packages() {
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || echo chromium
  command -v java >/dev/null 2>&1 || echo default-jre-headless
  command -v node >/dev/null 2>&1 || echo nodejs
  command -v npm >/dev/null 2>&1 || echo npm
  command -v curl >/dev/null 2>&1 || echo curl
  local version
  version="$("${AWS_CLI_V2:-/usr/bin/aws}" --version 2>/dev/null)" || true
  [[ "${version}" == aws-cli/2.* ]] || echo awscli
  # The SSH target of the Ansible test (tests/test_ansible.py): sshd, and python3-apt for the apt module.
  [[ -x "${SSHD:-/usr/sbin/sshd}" ]] || echo openssh-server
  [[ -d "${PYTHON3_APT_DIR:-/usr/lib/python3/dist-packages/apt}" ]] || echo python3-apt
  # The PostgreSQL server the store, lifecycle, contract and replica suites start privately (initdb in a temp dir).
  compgen -G "${PG_BIN:-/usr/lib/postgresql/*/bin}/initdb" >/dev/null || echo postgresql
}

main() {
  local check=0
  case "${1:-}" in
    -h | --help)
      usage
      exit 0
      ;;
    --check) check=1 ;;
    "") ;;
    *)
      printf '%s: unknown argument %s\n' "${PROG}" "$1" >&2
      usage >&2
      exit 2
      ;;
  esac
  local -a need
  mapfile -t need < <(missing_packages)
  if ((${#need[@]} == 0)); then
    return 0
  fi
  if ((!check)) && [[ "${EUID}" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    printf '%s: installing %s from Debian\n' "${PROG}" "${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
    return 0
  fi
  printf '%s: make test needs %s. Install them with:\n  sudo apt-get install -y --no-install-recommends %s\n' \
    "${PROG}" "${need[*]}" "${need[*]}" >&2
  exit 1
}

main "$@"
