#!/usr/bin/env bash
# `ssh` for tests, first on PATH: logs its argv (one JSON array a line to SSH_MAP_LOG), then runs the real ssh with
# the destination after `--` (user@<the sandbox's made-up address>) mapped to SSH_MAP_USER@127.0.0.1, port
# SSH_MAP_PORT (a real sshd), its host keys kept in SSH_MAP_KNOWN_HOSTS. Everything else goes through as given.
set -euo pipefail

main() {
  python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >>"${SSH_MAP_LOG}"
  local -a argv=()
  local arg after_dashes=0 mapped=0
  for arg in "$@"; do
    if [[ "${after_dashes}" -eq 0 && "${arg}" == "--" ]]; then
      argv+=(-p "${SSH_MAP_PORT}" -o "UserKnownHostsFile=${SSH_MAP_KNOWN_HOSTS}" --)
      after_dashes=1
    elif [[ "${after_dashes}" -eq 1 && "${mapped}" -eq 0 ]]; then
      argv+=("${SSH_MAP_USER}@127.0.0.1")
      mapped=1
    else
      argv+=("${arg}")
    fi
  done
  exec /usr/bin/ssh "${argv[@]}"
}

main "$@"
