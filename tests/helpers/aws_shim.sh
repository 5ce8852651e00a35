#!/usr/bin/env bash
# Test shim for AWS_CLI: records each `aws` invocation (argv as one JSON line), then runs the real CLI,
# or, when AWS_SHIM_FAULTS names a non-empty rules file, lets aws_faults.py inject the faults it lists.
set -euo pipefail
# One write per line (print() writes the newline apart when PYTHONUNBUFFERED is set, and calls made
# at once would then interleave their lines).
python3 -c 'import json,sys; sys.stdout.write(json.dumps(sys.argv[1:]) + "\n")' "$@" >>"${AWS_SHIM_LOG:?}"
if [[ -n "${AWS_SHIM_FAULTS:-}" && -s "${AWS_SHIM_FAULTS}" ]]; then
  exec python3 "$(dirname -- "${BASH_SOURCE[0]}")/aws_faults.py" "$@"
fi
exec "${AWS_SHIM_REAL:?}" "$@"
