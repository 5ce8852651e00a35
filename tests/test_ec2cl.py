"""`ec2cl`, the command-line client, end to end: a real server (uvicorn, the bash scripts, the `aws` CLI) on the moto
sandbox, with API_TOKEN set; the client run in process through Typer's CliRunner (real HTTP to the server), and as
the installed `.venv/bin/ec2cl` where a process matters (`ec2cl ssh` becomes ssh). `ec2cl ssh` reaches a real
sshd on 127.0.0.1 through tests/support/ssh_to_local.sh, an `ssh` first on PATH that maps the sandbox's made-up
address to it and logs the argv it was given."""

import json
import socket
import stat
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ec2cl.cli import app
from ec2cl.output import parse_time
from tests.support.checkip import CheckIp
from tests.support.processes import ROOT, VENV_BIN, free_port, safe_env, wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer
from tests.support.sshd import running_sshd

TOKEN = "ec2cl-test-token-0123456789"
SSH_MAP = ROOT / "tests" / "support" / "ssh_to_local.sh"


@pytest.fixture(scope="module")
def checkip():
    server = CheckIp()  # this machine's public address, as the client learns it: 203.0.113.7
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(emulator, tmp_path_factory):
    emulator.reset()
    # EC2_TARGET=sandbox, as `make run` serves: its answers say so (X-EC2-Target), and ec2cl warns that the
    # addresses are made up (here an `ssh` on PATH maps them to a real sshd).
    api = ApiServer(tmp_path_factory.mktemp("ec2cl"), emulator.url, API_TOKEN=TOKEN, EC2_TARGET="sandbox")
    yield api
    api.stop()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ec2cl-home")


@pytest.fixture
def cli(server, checkip, home):
    """Run ec2cl in process against the module's server: (exit code, stdout, stderr)."""
    runner = CliRunner()
    base = {"EC2CL_URL": server.url, "EC2CL_TOKEN": TOKEN, "EC2CL_PROFILE": None, "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"), "MY_IP_URL": checkip.url}

    def run(*args: str, input: str | None = None, **env: str | None):
        result = runner.invoke(app, list(args), input=input, env={**base, **env}, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


def api(server: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})


def record(server: ApiServer, instance_id: str) -> dict:
    """What the server holds (no sync: a read)."""
    with api(server) as client:
        return client.get(f"/instances/{instance_id}").json()


def test_a_box_up_waited_for_listed_snoozed_stopped_started_and_removed(cli, server, checkip, home):
    mark = len(server.aws_calls())
    code, out, err = cli("up", "cli-web-1", "--wait", "--auto-stop", "90m")
    assert code == 0, err
    assert out.startswith("cli-web-1 (i-") and ": running, t3.micro" in out
    assert "this server runs against the local EC2 sandbox: its boxes' addresses are made up" in err
    [box] = json.loads(cli("ls", "-o", "json", "--tag", "Name=cli-web-1")[1])["instances"]
    assert (box["state"], box["auto_stop_minutes"]) == ("running", 90)
    assert box["ssh_from"] == "203.0.113.7/32"  # this machine's address (MY_IP_URL), not the server's
    assert server.calls_of("run-instances", mark) == 1

    # A table for people, ids for scripts; a name a live instance has is refused before anything is sent.
    code, out, _ = cli("ls", "--state", "running")
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "ID", "STATE", "TYPE", "PUBLIC", "IP", "NEXT"]
    assert any(line.split()[:3] == ["cli-web-1", box["id"], "running"] for line in out.splitlines())
    assert box["id"] in cli("ls", "-q")[1].split()
    code, _, err = cli("up", "cli-web-1")
    assert code == 2 and err.startswith("ec2cl: name_taken: ") and box["id"] in err
    assert server.calls_of("run-instances", mark) == 1

    # snooze: the stop moves two hours later (no `aws` process).
    code, out, err = cli("snooze", "cli-web-1", "2h", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["stop_at"] > box["stop_at"]
    assert parse_time(json.loads(out)["stop_at"]) - parse_time(box["stop_at"]) == timedelta(minutes=120)
    code, _, err = cli("snooze", "cli-web-1", "soon")
    assert code == 2 and "bad_duration" in err

    # doctor: the key file and the box's SSH rule against this machine's address.
    key = home / "box.pem"
    key.write_text("a key file\n")
    key.chmod(0o600)
    code, out, err = cli("doctor", "cli-web-1", "-i", str(key))
    assert code == 0, out + err
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["ok", "API"], ["WARN", "sandbox"], ["ok", "token"], ["ok", "key"], ["ok", "address"], ["ok", "cli-web-1"]]
    assert "port 22 is open to 203.0.113.7/32, which holds 203.0.113.7" in out
    key.chmod(0o644)
    checkip.answer = "198.51.100.9\n"  # another network now
    try:
        code, out, _ = cli("doctor", "cli-web-1", "-i", str(key))
    finally:
        checkip.answer = "203.0.113.7\n"
    assert code == 1
    failed = {line.split()[1]: line for line in out.splitlines() if line.startswith("FAIL")}
    assert set(failed) == {"key", "cli-web-1"}
    assert failed["key"].endswith(f"{key} is mode 644: ssh refuses a key others can read: chmod 600 {key}")
    assert "port 22 is open to 203.0.113.7/32 only, not to 198.51.100.9" in failed["cli-web-1"]

    code, out, err = cli("stop", "cli-web-1")
    assert code == 0, err
    assert out.splitlines()[1].split()[:4] == ["cli-web-1", box["id"], "stopping", "sent"]
    code, out, err = cli("start", "cli-web-1", "-o", "json")
    assert code == 0, err
    assert json.loads(out) == {"action": "start", "results": [
        {"id": box["id"], "status": 202, "state": "pending", "error": None}]}
    code, out, _ = cli("events", "cli-web-1", "-o", "json")
    assert [e["action"] for e in json.loads(out)["events"]][:1] == ["create"]
    assert {"stop", "start", "snoozed"} <= {e["action"] for e in json.loads(out)["events"]}

    # rm asks first: "no" terminates nothing.
    code, _, err = cli("rm", "cli-web-1", input="n\n")
    assert code == 1 and "not confirmed: nothing was done" in err
    assert record(server, box["id"])["state"] in ("pending", "running")
    code, out, err = cli("rm", "cli-web-1", "--yes")
    assert code == 0, err
    assert record(server, box["id"])["state"] in ("shutting-down", "terminated")
    wait_until(lambda: record(server, box["id"])["state"] == "terminated")  # the sweep after the delete
    assert box["id"] not in cli("ls", "-q")[1].split()
    code, _, err = cli("snooze", "cli-web-1", "2h")
    assert code == 1 and err.startswith("ec2cl: instance_not_found: no instance is named 'cli-web-1'")


def test_an_ambiguous_name_lists_the_candidates_and_exits_2(cli, server, emulator):
    twins = launch_managed(emulator, 2, name="cli-twin")
    with api(server) as client:
        adopt(client, twins)
    mark = len(server.aws_calls())
    for argv in (["ssh", "cli-twin"], ["stop", "cli-twin"], ["events", "cli-twin"], ["schedule", "set", "cli-twin",
                                                                                      "none"]):
        code, out, err = cli(*argv)
        assert code == 2, (argv, err)
        assert err.startswith("ec2cl: ambiguous_name: 2 instances are named 'cli-twin': ") and out == ""
        assert all(f"{i} (running)" in err for i in twins)
    assert server.mutations_since(mark) == []
    code, out, _ = cli("events", twins[0])  # by its id, either one
    assert code == 0 and out.startswith("AT (UTC)")


def test_up_sends_the_create_again_with_the_same_key_when_the_connection_drops(cli, server):
    mark = len(server.aws_calls())
    with DroppingProxy(server.port) as proxy:  # forwards the first create, then hangs up before the answer
        code, out, err = cli("up", "cli-resent", "--ssh-from", "198.51.100.0/24", "-o", "json", EC2CL_URL=proxy.url)
    assert code == 0, err
    assert "sending the create again in 1 s with the same Idempotency-Key" in err
    assert "the server had already launched it" in err  # the second answer was the first launch's
    assert server.calls_of("run-instances", mark) == 1
    created = json.loads(out)
    assert (created["name"], created["ssh_from"]) == ("cli-resent", "198.51.100.0/24")
    keys = {request.split(b"idempotency-key: ", 1)[1].split(b"\r\n", 1)[0] for request in proxy.requests}
    assert len(proxy.requests) == 2 and len(keys) == 1 and keys.pop().startswith(b"ec2cl-")


class DroppingProxy:
    """A TCP proxy to the server that hangs up on the first POST /instances after the server answered it (a
    dropped connection), and passes everything else through. `requests`: each create's request head."""

    def __init__(self, port: int) -> None:
        self.target, self.requests, self.dropped = port, [], False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def __enter__(self) -> "DroppingProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.target)) as upstream:
            client.settimeout(30)
            request = client.recv(65536)
            head = request.split(b"\r\n\r\n", 1)[0]
            length = int(next((line.split(b":", 1)[1] for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), b"0"))
            while len(request) - len(head) - 4 < length:
                request += client.recv(65536)
            upstream.sendall(request)
            response = b""
            while chunk := upstream.recv(65536):
                response += chunk
                if _complete(response):
                    break
            if head.startswith(b"POST /instances ") or head.startswith(b"POST /instances\r"):
                self.requests.append(head.lower())
                if not self.dropped:
                    self.dropped = True
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return  # closed with a reset: the client never sees the answer
            client.sendall(response)


def _complete(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def test_tokens_login_and_an_unreachable_api(cli, home, server):
    code, _, err = cli("ls", EC2CL_TOKEN=None)
    assert code == 1 and err.startswith("ec2cl: unauthorized: Missing or wrong bearer token")

    config = home / ".config" / "ec2cl" / "config.toml"
    code, _, err = cli("login", "--token-stdin", input="not-the-token\n", EC2CL_TOKEN=None)
    assert code == 1 and "unauthorized" in err and not config.exists()  # a wrong token is not kept
    code, _, err = cli("login", "--token-stdin", input=f"{TOKEN}\n", EC2CL_TOKEN=None)
    assert code == 0, err
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert f'token = "{TOKEN}"' in config.read_text() and f'url = "{server.url}"' in config.read_text()
    code, out, err = cli("ls", EC2CL_TOKEN=None, EC2CL_URL=None)  # the profile's URL and token
    assert code == 0, err
    code, _, err = cli("ls", EC2CL_PROFILE="team")
    assert code == 2 and err.startswith("ec2cl: unknown_profile: no profile 'team'")

    closed = free_port()
    code, _, err = cli("ls", EC2CL_URL=f"http://127.0.0.1:{closed}")
    assert code == 3 and err.startswith(f"ec2cl: unreachable: cannot reach the API at http://127.0.0.1:{closed}")
    config.unlink()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("ec2cl-sshd") / "sshd") as target:
        yield target


def test_ssh_by_name_waits_for_sshd_then_becomes_ssh(server, emulator, sshd, home, checkip, tmp_path):
    [box_id] = launch_managed(emulator, name="cli-ssh-box")
    with api(server) as client:
        [box] = adopt(client, [box_id])
    log, known_hosts = tmp_path / "ssh-argv.log", tmp_path / "known_hosts"
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    (wrapper / "ssh").symlink_to(SSH_MAP)
    env = safe_env(EC2CL_URL=server.url, EC2CL_TOKEN=TOKEN, HOME=str(home), MY_IP_URL=checkip.url,
                   PATH=f"{wrapper}:{VENV_BIN}:/usr/bin:/bin", SSH_MAP_LOG=str(log), SSH_MAP_PORT=str(sshd["port"]),
                   SSH_MAP_USER=sshd["user"], SSH_MAP_KNOWN_HOSTS=str(known_hosts))

    def ec2cl(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "ec2cl"), *argv], capture_output=True, text=True, timeout=120,
                              env=env)

    done = ec2cl("ssh", "cli-ssh-box", "-i", str(sshd["key"]), "--", "echo", "hello from", "$0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("hello from ") and "$0" not in done.stdout  # as ssh does: the far shell reads it
    assert "addresses are made up" in done.stderr  # the sandbox's: said at once, then tried all the same
    probe, session = [json.loads(line) for line in log.read_text().splitlines()]
    options = ["-i", str(sshd["key"]), "-o", "IdentitiesOnly=yes", "-o", f"HostKeyAlias={box_id}",
               "-o", "StrictHostKeyChecking=accept-new"]
    assert session == [*options, "--", f"ec2-user@{box['public_ip']}", "echo", "hello from", "$0"]
    assert probe[:len(options)] == options and "BatchMode=yes" in probe and probe[-1] == "true"
    # The host key is kept under the instance's id (EC2 gives its address to another instance later).
    assert subprocess.run(["ssh-keygen", "-F", box_id, "-f", str(known_hosts)], capture_output=True).returncode == 0

    done = ec2cl("ssh", box_id, "-i", str(sshd["key"]), "--", "exit 7")
    assert done.returncode == 7  # ssh's code: the command's

    # A stopped box: refused without --start; with it, started, waited for, then in.
    with api(server) as client:
        client.post(f"/instances/{box_id}/stop").raise_for_status()
        wait_until(lambda: client.get(f"/instances/{box_id}").json()["state"] == "stopped")
    done = ec2cl("ssh", "cli-ssh-box", "-i", str(sshd["key"]), "--", "true")
    assert done.returncode == 1 and "ec2cl: wrong_state: cli-ssh-box" in done.stderr
    assert "`ec2cl ssh --start cli-ssh-box` starts it" in done.stderr
    mark = len(server.aws_calls())
    done = ec2cl("ssh", "--start", "cli-ssh-box", "-i", str(sshd["key"]), "--", "echo", "started")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "started\n" and "starting cli-ssh-box" in done.stderr
    assert server.calls_of("start-instances", mark) == 1

    # sshd not answering: progress, then exit 4 when --timeout runs out.
    env["SSH_MAP_PORT"] = str(free_port())
    done = ec2cl("ssh", "cli-ssh-box", "-i", str(sshd["key"]), "--timeout", "3", "--", "true")
    assert done.returncode == 4, done.stderr
    assert "waiting for ssh on" in done.stderr and "ec2cl: timed_out: ssh to cli-ssh-box" in done.stderr

    # Shell completion (`ec2cl --install-completion`) of commands and of instance names, in each shell.
    for shell, extra in (("bash", {"COMP_WORDS": "ec2cl ssh cli-ss", "COMP_CWORD": "2"}),
                         ("zsh", {"_TYPER_COMPLETE_ARGS": "ec2cl ssh cli-ss"}),
                         ("fish", {"_TYPER_COMPLETE_ARGS": "ec2cl ssh cli-ss",
                                   "_TYPER_COMPLETE_FISH_ACTION": "get-args"})):
        completed = subprocess.run([str(VENV_BIN / "ec2cl")], capture_output=True, text=True, timeout=30,
                                   env={**env, "_EC2CL_COMPLETE": f"complete_{shell}", **extra})
        assert completed.returncode == 0 and "cli-ssh-box" in completed.stdout, (shell, completed)

    # ssh-config: a Host entry by name and id, with the same options.
    done = ec2cl("ssh-config", "-i", str(sshd["key"]))
    assert done.returncode == 0 and done.stdout == "Include ~/.ssh/config.d/ec2cl\n"
    written = (home / ".ssh" / "config.d" / "ec2cl").read_text()
    address = record(server, box_id)["public_ip"]  # a new one since its start, as EC2 does
    assert f"Host cli-ssh-box {box_id}\n    HostName {address}\n    User ec2-user\n" in written
    assert f"    HostKeyAlias {box_id}\n    StrictHostKeyChecking accept-new\n" in written
