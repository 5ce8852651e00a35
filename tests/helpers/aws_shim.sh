#!/usr/bin/env bash
# Test shim for AWS_CLI: records each `aws` invocation (argv as one JSON line) then runs the real CLI.
set -euo pipefail
python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@" >>"${AWS_SHIM_LOG:?}"
exec "${AWS_SHIM_REAL:?}" "$@"
