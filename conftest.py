"""Shared fixtures: a real moto server, the real API server process, and a guard against real AWS.

Every process started here gets fake credentials, an explicit emulator endpoint, no AWS profile or
config file, and a proxy that goes nowhere for anything but 127.0.0.1, so no test can reach AWS.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
AWS_SHIM = ROOT / "tests" / "helpers" / "aws_shim.sh"
KEY_NAME = "my_ec2_keypair"
# Make the emulator refuse what AWS refuses: unknown key pairs, AMIs and instance types.
STRICT_MOTO = {"MOTO_ENABLE_KEYPAIR_VALIDATION": "true", "MOTO_ENABLE_AMI_VALIDATION": "true",
               "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true"}


BACKGROUND_OPERATIONS = {"describe-instances", "describe-instance-types", "get-parameters", "describe-images",
                         "get-caller-identity"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
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


class Emulator:
    """A moto server on 127.0.0.1, plus a boto3 client to check EC2's side of things."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "moto.log", "wb")
        self.proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=safe_env(**STRICT_MOTO),
                                     start_new_session=True)
        wait_http(f"{self.url}/moto-api/", proc=self.proc)
        import boto3  # moto's dependency; used only to look at the emulator

        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        self.ec2 = boto3.client("ec2", endpoint_url=self.url, region_name="us-east-1",
                                aws_access_key_id="testing", aws_secret_access_key="testing")
        self.ssm = boto3.client("ssm", endpoint_url=self.url, region_name="us-east-1",
                                aws_access_key_id="testing", aws_secret_access_key="testing")

    def reset(self) -> None:
        httpx.post(f"{self.url}/moto-api/reset", timeout=30).raise_for_status()
        self.ec2.create_key_pair(KeyName=KEY_NAME)

    def instances(self, managed_only: bool = False) -> dict[str, dict]:
        filters = [{"Name": "tag:ManagedBy", "Values": ["ec2-creator-local"]}] if managed_only else []
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return {i["InstanceId"]: i for page in pages for r in page["Reservations"] for i in r["Instances"]}

    def ami(self, param: str = "al2023-ami-kernel-default-x86_64") -> str:
        name = f"/aws/service/ami-amazon-linux-latest/{param}"
        return self.ssm.get_parameter(Name=name)["Parameter"]["Value"]

    def close(self) -> None:
        stop_process(self.proc)
        self.log.close()


class ApiServer:
    """The real server: `python -m uvicorn app.main:app` from the repo root, on a free port."""

    def __init__(self, tmp: Path, emulator_url: str | None, cwd: Path = ROOT, unset: tuple[str, ...] = (),
                 **env: str) -> None:
        self.tmp = tmp
        self.cwd = cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = Path(env.get("DATABASE_URL") or tmp / "instances.db")
        self.shim_log = tmp / "aws_calls.log"
        self.shim_log.touch()
        self.faults = tmp / "aws_faults.json"  # rules for tests/helpers/aws_faults.py; empty: no faults
        self.faults.write_text("")
        self.log_path = tmp / "server.log"
        settings = {
            "DATABASE_URL": str(self.db_path),
            "RECONCILE_INTERVAL_SECONDS": "1",
            "AWS_CLI": str(AWS_SHIM),
            "AWS_SHIM_LOG": str(self.shim_log),
            "AWS_SHIM_REAL": str(VENV_BIN / "aws"),
            "AWS_SHIM_FAULTS": str(self.faults),
            "SSH_KEY_PATH": "~/.ssh/my_ec2_keypair.pem",
        }
        if emulator_url:
            settings |= {"EC2_ENDPOINT_URL": emulator_url, "AWS_ENDPOINT_URL": emulator_url}
        self.env = {k: v for k, v in safe_env(**(settings | env)).items() if k not in unset}
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, wait: bool = True) -> None:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(ROOT), "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            wait_http(f"{self.url}/health", proc=self.proc)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
            self.log.close()

    def set_faults(self, *rules: dict) -> None:
        """Make chosen `aws` calls misbehave (see tests/helpers/aws_faults.py); no rules: none do."""
        self.faults.write_text(json.dumps(list(rules)) if rules else "")

    def aws_calls(self) -> list[list[str]]:
        """Every `aws` process the server spawned so far, as argv lists."""
        return [json.loads(line) for line in self.shim_log.read_text().splitlines() if line.strip()]

    def mutations_since(self, mark: int) -> list[list[str]]:
        """`aws` processes spawned after `aws_calls()[:mark]` that are not background reads
        (reconcile sweeps, the AMI catalogue warming up at start)."""
        return [c for c in self.aws_calls()[mark:] if not BACKGROUND_OPERATIONS & set(c)]

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "integration: starts real processes (emulator, server, browser); "
                                       "make test-fast leaves these out")


def pytest_collection_modifyitems(items) -> None:
    """Every test that needs the emulator is an integration test; `make test-fast` runs the others."""
    for item in items:
        if "emulator" in item.fixturenames:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    emu = Emulator(tmp_path_factory.mktemp("moto"))
    emu.reset()
    yield emu
    emu.close()


@pytest.fixture
def fresh_emulator(emulator):
    """The emulator with nothing in it but the public AMIs and our key pair."""
    emulator.reset()
    return emulator


@pytest.fixture(scope="module")
def api_server(emulator, tmp_path_factory):
    server = ApiServer(tmp_path_factory.mktemp("api"), emulator.url)
    yield server
    server.stop()


@contextmanager
def synced_client(server: ApiServer) -> Iterator[httpx.Client]:
    """An httpx client on `server`, with no faults injected and its record caught up by a sync."""
    server.set_faults()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.post("/instances/sync").raise_for_status()
        yield client
    server.set_faults()


@pytest.fixture
def api(api_server, fresh_emulator):
    """An httpx client on the module's server; the emulator is fresh and the record caught up."""
    with synced_client(api_server) as client:
        yield client


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


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


def aws_error(code: str, operation: str, message: str) -> dict:
    """A `fail` fault that answers the way the AWS CLI does when EC2 refuses (stderr text, exit 255)."""
    return {"stderr": f"An error occurred ({code}) when calling the {operation} operation: {message}", "code": 255}
