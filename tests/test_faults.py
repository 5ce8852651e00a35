"""AWS failures seen through the real server: unreachable endpoint, a hanging endpoint, no credentials."""

import shutil
import socket
import sqlite3
import threading
import time
from contextlib import closing

import httpx
import pytest

from tests.support.processes import free_port
from tests.support.server import CATALOG_TEMPLATES, ApiServer, rescope_catalog

pytestmark = pytest.mark.integration  # real processes: make test-fast leaves these out

# No SSH rule (ssh_from none): the create's first `aws` call is then its security group's, which meets the
# fault (the SSH rule's "my_ip" would first ask a web service for this host's address, which is not the subject).
BODY = {"name": "x", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "ssh_from": "none"}


@pytest.fixture
def server_at(emulator, tmp_path):
    """Start a server on an endpoint that misbehaves. It starts with the AMI catalogue, as every test server does
    (the session emulator's, made this endpoint's: tests/support/server.py): without it, its start fetched the
    catalogue and the CLI's version from the broken endpoint (four `aws` processes, each failing or timing out)
    and so did the create, before its own call; what these tests assert is how the create's and the sync's
    calls fail."""
    servers = []

    def start(endpoint: str, **env) -> ApiServer:
        tmp = tmp_path / f"server{len(servers)}"
        tmp.mkdir()
        shutil.copyfile(CATALOG_TEMPLATES[emulator.url], tmp / "instances.db")
        with closing(sqlite3.connect(tmp / "instances.db")) as conn, conn:
            rescope_catalog(conn, emulator.url, endpoint)
        servers.append(ApiServer(tmp, endpoint, RECONCILE_INTERVAL_SECONDS="3600", **env))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_unreachable_endpoint_is_503_and_health_stays_up(server_at):
    server = server_at(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with httpx.Client(base_url=server.url, timeout=60) as api:
        response = api.post("/instances", json=BODY)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "endpoint_unreachable"
        assert int(response.headers["Retry-After"]) > 0
        assert api.post("/instances/sync").status_code == 503
        assert api.get("/health").json() == {"status": "ok"}
        assert api.get("/instances").json() == {"instances": []}


@pytest.fixture
def silent_endpoint():
    """A TCP server that accepts connections and never answers (an `aws` call that hangs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


def test_hanging_aws_call_is_504_within_the_bound(server_at, silent_endpoint):
    server = server_at(silent_endpoint, AWS_CLI_TIMEOUT_SECONDS="3")
    with httpx.Client(base_url=server.url, timeout=60) as api:
        t0 = time.monotonic()
        response = api.post("/instances", json=BODY)
        assert response.status_code == 504, response.text
        assert response.json()["code"] == "aws_timeout"
        assert time.monotonic() - t0 < 30
        assert api.get("/health").status_code == 200


def test_missing_credentials_are_503_with_the_fix(server_at, tmp_path):
    server = server_at(f"http://127.0.0.1:{free_port()}", AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    with httpx.Client(base_url=server.url, timeout=60) as api:
        response = api.post("/instances", json=BODY)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "no_credentials"
        assert "AWS_PROFILE" in response.json()["detail"]
