"""`make run` as a user runs it: its banner comes once the server listens, never before (a port in use
ends with uvicorn's "address already in use" and no banner), and Ctrl-C still shows the graceful shutdown.
Real make, sandbox (moto) and uvicorn, on free ports; the sandbox's state directory is removed after."""

import os
import shutil
import signal
import socket
import subprocess
import time

import httpx
import pytest

from tests.support.processes import ROOT, free_port, safe_env

pytestmark = pytest.mark.integration  # real processes: make test-fast leaves these out


def make(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(["make", "--no-print-directory", *args], cwd=ROOT, env=safe_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kw)


def read_until(proc: subprocess.Popen, needle: str, timeout: float = 90) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen:\n" + "\n".join(lines))


@pytest.fixture
def sandbox_port():
    port = free_port()
    yield port
    subprocess.run(["make", "--no-print-directory", "sandbox-stop", f"SANDBOX_PORT={port}"], cwd=ROOT,
                   env=safe_env(), capture_output=True, timeout=60)
    shutil.rmtree(ROOT / "data" / "sandbox" / str(port), ignore_errors=True)


def test_the_banner_comes_once_it_listens_and_ctrl_c_shuts_down_gracefully(sandbox_port):
    port = free_port()
    proc = make("run", f"PORT={port}", f"SANDBOX_PORT={sandbox_port}")
    try:
        lines = read_until(proc, "API docs at")
        running = next(i for i, line in enumerate(lines) if "Uvicorn running on" in line)
        assert running < len(lines) - 1 and "target SANDBOX" in lines[-1], lines
        # The budget in force, as the server says it: the sandbox's, BUDGET_USD being unset (safe_env, no .env).
        budget = "budget 100.00 USD a month (SANDBOX_BUDGET_USD, BUDGET_USD unset)"
        assert any("EC2 Creator Local targets SANDBOX" in line and budget in line for line in lines), lines
        assert budget in lines[-1], lines
        assert httpx.get(f"http://127.0.0.1:{port}/budget", timeout=30).json()["budget_usd"] == 100.0
        assert f"http://127.0.0.1:{port}/docs" in lines[-1]
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole foreground group
        rest, _ = proc.communicate(timeout=60)
        assert "Application shutdown complete" in rest, rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_port_in_use_says_so_and_shows_no_banner(sandbox_port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = make("run", f"PORT={taken.getsockname()[1]}", f"SANDBOX_PORT={sandbox_port}")
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "address already in use" in out and "API docs at" not in out, out
