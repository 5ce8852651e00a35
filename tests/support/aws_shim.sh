#!/usr/bin/env bash
# AWS_CLI shim for the tests and the benchmark: appends each `aws` invocation (argv as one JSON array
# line) to $AWS_SHIM_LOG, then runs the real CLI ($AWS_SHIM_REAL), or, when AWS_SHIM_FAULTS names a
# non-empty rules file, lets aws_faults.py inject the faults it lists.
# The line is built in bash and written with one printf: no python start per call (~2 ms, not ~25 ms,
# added to each process the benchmark counts), and calls made at once never interleave their lines.
set -euo pipefail
items=()
for arg in "$@"; do
  arg="${arg//\\/\\\\}"
  arg="${arg//\"/\\\"}"
  arg="${arg//$'\n'/\\n}"
  arg="${arg//$'\r'/\\r}"
  arg="${arg//$'\t'/\\t}"
  items+=("\"${arg}\"")
done
IFS=,
line="[${items[*]}]"
IFS=$' \t\n'
printf '%s\n' "${line}" >>"${AWS_SHIM_LOG:?}"
if [[ -n "${AWS_SHIM_FAULTS:-}" && -s "${AWS_SHIM_FAULTS}" ]]; then
  exec python3 "$(dirname -- "${BASH_SOURCE[0]}")/aws_faults.py" "$@"
fi
exec "${AWS_SHIM_REAL:?}" "$@"
