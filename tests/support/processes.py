"""Processes for the tests and the benchmark: free ports, a safe environment, waiting and stopping.

Every process started through safe_env gets fake credentials, no AWS profile or config file, and a
proxy that goes nowhere for anything but 127.0.0.1, so no test can reach real AWS.
"""

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


AWS_CLI_V1 = VENV_BIN / "aws"  # the venv's, pinned in requirements.txt


@functools.cache
def aws_cli_v2() -> Path:
    """Debian's AWS CLI v2 (AWS_CLI_V2, default /usr/bin/aws), which `make system-deps` installs. Checked once
    per process (its `--version` is ~0.5 CPU-s); a missing one fails every test that asks, each time."""
    path = Path(os.environ.get("AWS_CLI_V2") or "/usr/bin/aws")
    try:
        said = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    except OSError as exc:
        said = str(exc)
    if not said.startswith("aws-cli/2."):
        raise AssertionError(f"no AWS CLI v2 at {path} ({said.strip()!r}): run `make system-deps` (Debian's "
                             "awscli package) or set AWS_CLI_V2 to a v2")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The TLS context of the harness's httpx clients, built once: httpx builds one for each client (and each
# httpx.get/post) otherwise, loading the CA bundle every time: ~20 ms of CPU, which made wait_http's polls
# ~0.4 CPU-s of the test process per server start under load. Same verification (httpx's default context).
TLS = httpx.create_ssl_context()


def safe_env(**extra: str) -> dict[str, str]:
    """The environment for every child process: fake credentials, never a real AWS account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
    env.update({
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.update(extra)
    return env


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers below 500 (a new httpx client each 0.1 s: with the shared TLS context)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1, verify=TLS).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def wait_quiet(server, seconds: float = 2.0, timeout: float = 30.0) -> None:
    """Until `server` has spawned no `aws` process for `seconds`: the sweeps earlier requests asked for in the
    background (each starts within a second of its request) have run, so what comes next is the test's own."""
    def quiet() -> bool:
        before = len(server.aws_calls())
        time.sleep(seconds)
        return len(server.aws_calls()) == before

    wait_until(quiet, timeout=timeout, interval=0)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
