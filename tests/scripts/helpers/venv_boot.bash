# shellcheck shell=bash
# Loaded by the venv suites (ensure_venv.bats, make_venv.bats): `python -m venv` spends ~2 CPU-s of its
# ~2.3 in ensurepip (pip installing itself from its bundled wheel), and those suites make six venvs a run.
# fast_venv_boot, called in setup_file, points PYTHON_BOOT at helpers/python_boot, which hands everything to
# the real PYTHON_BOOT but makes venvs with --without-pip and links into each one the pip that interpreter
# has (copied once per file: the venv's pip may upgrade or remove itself, never the real one's). The venv
# is a real one, and its pip a real pip, installing for real (with no index, as before). Without a pip to
# copy, PYTHON_BOOT stays as it was: the suites pass, at ensurepip's cost.

fast_venv_boot() {
  local real="${PYTHON_BOOT:-python3}" donor="${BATS_FILE_TMPDIR}/pip-donor"
  "${real}" - "${donor}" <<'PY' 2>/dev/null || return 0
import importlib.metadata, pathlib, shutil, sys

dist = importlib.metadata.distribution("pip")
site = pathlib.Path(dist.locate_file(""))
for name in ("pip", f"pip-{dist.version}.dist-info"):
    shutil.copytree(site / name, pathlib.Path(sys.argv[1]) / name, symlinks=True)
PY
  export REAL_PYTHON_BOOT="${real}" PIP_DONOR="${donor}"
  export PYTHON_BOOT="${BATS_TEST_DIRNAME}/helpers/python_boot"
}
