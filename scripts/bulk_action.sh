#!/usr/bin/env bash
#
# Stop or start (or delete) every tracked instance that carries a tag, in one bulk call to the API
# (POST /instances/actions: one `aws` process for all of them), and print one line per instance.
# The off-hours Jenkins job runs it; it works by hand too.
#
#   scripts/bulk_action.sh stop --tag Schedule=office-hours [--url http://127.0.0.1:8000]
#
# Environment: API_TOKEN (sent as a bearer token when set). Exit codes: 0 every instance done (or
# nothing matched), 1 some instance failed or the API refused the call, 2 usage.

set -euo pipefail

readonly PROG="${0##*/}"
SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
# shellcheck source=SCRIPTDIR/lib.sh
source "${SCRIPT_DIR}/lib.sh"
readonly DEFAULT_URL="http://127.0.0.1:8000"
readonly TAG_REGEX='^[A-Za-z0-9 _.:/+@-]{1,128}=[A-Za-z0-9 _.:/=+@-]{0,256}$'

usage() {
  cat <<USAGE
Usage: ${PROG} ACTION --tag KEY=VALUE [--tag KEY=VALUE]... [--state STATE]... [--url URL]

ACTION (stop, start or delete) every tracked instance whose tags match all the
--tag pairs (and, with --state, is in one of those states) with one bulk call
to the API (POST /instances/actions), then print a line per instance.

Options:
  --tag KEY=VALUE   a tag every instance must carry (at least one)
  --state STATE     only instances in this state (repeatable: any of them; default:
                    pending and running for stop, stopped for start, any for delete)
  --url URL         the API (default ${DEFAULT_URL})
  -h, --help        show this help

Environment: API_TOKEN, sent as 'Authorization: Bearer' when set.
USAGE
}

main() {
  local action="" url="${DEFAULT_URL}"
  local -a tags=() states=()
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --tag | --state | --url)
        (($# >= 2)) || usage_error "option $1 requires a value"
        case "$1" in
          --tag)
            [[ "$2" =~ ${TAG_REGEX} ]] || usage_error "--tag must be KEY=VALUE (EC2 tag characters), got '$2'"
            tags+=("$2")
            ;;
          --state) states+=("$2") ;;
          --url) url="$2" ;;
        esac
        shift 2
        ;;
      stop | start | delete)
        [[ -z "${action}" ]] || usage_error "one ACTION only"
        action="$1"
        shift
        ;;
      *)
        usage_error "unexpected argument: '$1'"
        ;;
    esac
  done
  [[ -n "${action}" ]] || usage_error "ACTION (stop, start or delete) is required"
  ((${#tags[@]} > 0)) || usage_error "at least one --tag KEY=VALUE is required"
  [[ "${url}" =~ ^https?:// ]] || usage_error "--url must be an http:// or https:// URL"
  if ((${#states[@]} == 0)); then  # only those the action applies to: the others would answer 409
    case "${action}" in
      stop) states=(pending running) ;;
      start) states=(stopped) ;;
      delete) ;;
    esac
  fi

  python3 - "${url}" "${action}" "${#tags[@]}" "${tags[@]}" "${states[@]}" <<'PY'
import json
import os
import sys
import urllib.error
import urllib.request

url, action, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
tags = dict(pair.split("=", 1) for pair in sys.argv[4:4 + count])
states = sys.argv[4 + count:]
selector = {"tag": tags, **({"state": states} if states else {})}
body = json.dumps({"action": action, "selector": selector}).encode()
headers = {"Content-Type": "application/json"}
if os.environ.get("API_TOKEN"):
    headers["Authorization"] = f"Bearer {os.environ['API_TOKEN']}"
request = urllib.request.Request(f"{url.rstrip('/')}/instances/actions", data=body, headers=headers)
try:
    with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - http(s) checked by the caller
        results = json.load(answer)["results"]
except urllib.error.HTTPError as exc:
    print(f"bulk_action.sh: the API answered {exc.code}: {exc.read().decode(errors='replace')[:500]}",
          file=sys.stderr)
    sys.exit(1)
except (urllib.error.URLError, OSError, ValueError) as exc:
    print(f"bulk_action.sh: cannot reach {url} ({getattr(exc, 'reason', exc)}); is the API running?",
          file=sys.stderr)
    sys.exit(1)
failed = 0
for result in results:
    error = result.get("error") or {}
    failed += result["status"] >= 400
    print(f"{result['id']}  {result['status']}  {result.get('state') or '-'}  {error.get('code', '')}".rstrip())
print(f"{action}: {len(results)} instance(s) matched {selector}, {failed} failed")
sys.exit(1 if failed else 0)
PY
}

main "$@"
