#!/usr/bin/env bash
# Benchmark shim for AWS_CLI: appends each `aws` invocation (argv as one JSON array line, the same
# format as tests/helpers/aws_shim.sh) to $AWS_SHIM_LOG, then execs the real CLI.
# Pure bash (no python3 start per call) so it adds ~2 ms, not ~25 ms, to each process it counts.
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
# One write(2) of one line on an O_APPEND file: concurrent shims never interleave.
printf '%s\n' "${line}" >>"${AWS_SHIM_LOG:?}"
exec "${AWS_SHIM_REAL:?}" "$@"
