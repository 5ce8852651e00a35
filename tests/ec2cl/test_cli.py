"""Parsing and output, through Typer's CliRunner, with the API in process (httpx's MockTransport): what each
command sends, what it prints, its exit code. End to end against a real server: tests/test_ec2cl.py."""

import json

import httpx
import pytest
from typer.testing import CliRunner

from ec2cl.cli import State, app

BOX = {"id": "i-0123456789abcdef0", "name": "web-1", "state": "running", "instance_type": "t3.micro",
       "public_ip": "198.51.100.7", "ami": "ami-1", "next_action": None, "login_user": "ec2-user"}
OTHER = {**BOX, "id": "i-0fedcba9876543210", "name": "db", "state": "stopped", "public_ip": None}


class FakeApi:
    """The routes the commands use, answering from a list of instances; `sent` is every request."""

    def __init__(self, *instances: dict, headers: dict | None = None) -> None:
        self.instances, self.sent, self.headers = list(instances), [], headers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, request.url.path, dict(request.url.params.multi_items()), body))
        answer = self.answer(request, body)
        answer.headers.update(self.headers)
        return answer

    def answer(self, request: httpx.Request, body: dict | None) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/instances":
            name = request.url.params.get("name")
            return httpx.Response(200, json={"instances": [i for i in self.instances if name in (None, i["name"])]})
        if request.method == "POST" and request.url.path == "/instances":
            return httpx.Response(201, json={**BOX, "name": body["name"], "state": "pending"})
        if request.method == "POST" and request.url.path == "/instances/actions":
            return httpx.Response(200, json={"action": body["action"], "results": [
                {"id": i, "status": 202, "state": "shutting-down", "error": None} if i == BOX["id"] else
                {"id": i, "status": 409, "state": "stopped", "error": {"code": "wrong_state", "detail": "no"}}
                for i in body["ids"]]})
        return httpx.Response(404, json={"detail": "No such route.", "code": "not_found"})


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in ("EC2CL_URL", "EC2CL_TOKEN", "EC2CL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MY_IP_URL", "http://127.0.0.1:9/")  # the discard port: nothing answers

    def invoke(fake: FakeApi, *args: str, input: str | None = None):
        result = CliRunner().invoke(app, list(args), obj=State(transport=httpx.MockTransport(fake)), input=input)
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_up_sends_what_the_options_say(run):
    fake = FakeApi()
    code, out, err = run(fake, "up", "web-1", "--type", "t4g.micro", "--disk", "20", "--auto-stop", "off",
                         "--schedule", "office", "--no-public-ip", "--ami", "debian-12")
    assert code == 0, err
    [(_, _, params, _), (method, path, _, body)] = fake.sent
    assert params == {"name": "web-1"}  # the name checked first
    assert (method, path) == ("POST", "/instances")
    assert body == {"name": "web-1", "ami": "debian-12", "instance_type": "t4g.micro", "storage_gb": 20,
                    "auto_stop_minutes": None, "schedule": "office", "associate_public_ip": False,
                    "ssh_from": "my_ip"}
    assert "could not learn this machine's public address from http://127.0.0.1:9/" in err
    assert out == "web-1 (i-0123456789abcdef0): pending, t3.micro, ami-1, at 198.51.100.7\n"


def test_up_defaults_and_a_given_ssh_from(run):
    fake = FakeApi()
    code, out, err = run(fake, "up", "web 2", "--ssh-from", "203.0.113.0/24", "--auto-stop", "1h30m", "-o", "json")
    assert code == 0, err
    assert fake.sent[-1][3] == {"name": "web 2", "ami": "amazon-linux-2023", "instance_type": "t3.micro",
                                "auto_stop_minutes": 90, "ssh_from": "203.0.113.0/24"}
    assert json.loads(out)["name"] == "web 2" and "could not learn" not in err


@pytest.mark.parametrize("args, message", [
    (["up", "web-9", "--auto-stop", "8x"], "ec2cl: bad_duration: --auto-stop: '8x' is not a duration"),
    (["up", "web-9", "--disk", "many"], "Invalid value for '--disk'"),
    (["ls", "-o", "yaml"], "Invalid value for '--output' / '-o'"),
    (["snooze", "web-1"], "Missing argument 'DURATION'"),
    (["stop"], "Missing argument 'NAME...'"),
    (["schedule", "set", "web-1"], "Missing argument 'SCHEDULE'"),
    (["ls", "--bogus"], "No such option: --bogus"),
    (["up", "i-0aaaaaaaaaaaaaaaa"], "ec2cl: name_taken: 'i-0aaaaaaaaaaaaaaaa' looks like an instance id"),
    (["up", " "], "ec2cl: bad_name: NAME: give the box a name"),
    (["up", "web-9", "--ssh-from", "bogus"], "ec2cl: bad_ssh_from: --ssh-from: 'bogus' is not my_ip, none,"),
    (["up", "web-9", "--auto-stop", "0m"], "ec2cl: bad_duration: --auto-stop: 0m is not between 1m and 7d"),
    (["schedule", "show", "../instances"], "ec2cl: bad_schedule_name: SCHEDULE: '../instances' is not a"),
    (["ls", "--state", "bogus"], "'bogus' is not one of 'pending', 'running'"),
    (["snooze", "web-1", "10m"], "ec2cl: bad_duration: DURATION: a snooze is 15m to 12h, not 10m"),
    (["snooze", "web-1", "13h"], "ec2cl: bad_duration: DURATION: a snooze is 15m to 12h, not 13h"),
])
def test_usage_errors_exit_2_and_send_nothing_that_changes_anything(run, args, message):
    fake = FakeApi(BOX)
    code, out, err = run(fake, *args)
    assert code == 2 and message in err and out == ""
    assert all(method == "GET" for method, *_ in fake.sent)


def test_up_refuses_a_taken_name_with_exit_2(run):
    fake = FakeApi(BOX)
    code, _, err = run(fake, "up", "web-1")
    assert code == 2 and err == ("ec2cl: name_taken: the name 'web-1' is taken by i-0123456789abcdef0 (running): "
                                 "choose another, or `ec2cl rm web-1` first\n")
    assert [m for m, *_ in fake.sent] == ["GET"]


def test_ls_table_quiet_and_json(run):
    fake = FakeApi(BOX, OTHER)
    code, out, _ = run(fake, "ls", "--state", "running", "--state", "stopped", "--tag", "Team=web")
    assert code == 0 and out.splitlines() == [
        "NAME   ID                   STATE    TYPE      PUBLIC IP     NEXT",
        "db     i-0fedcba9876543210  stopped  t3.micro  -             -",
        "web-1  i-0123456789abcdef0  running  t3.micro  198.51.100.7  -"]
    assert fake.sent[0][2] == {"state": "stopped", "tag": "Team=web"} or fake.sent[0][1] == "/instances"
    assert run(fake, "ls", "-q")[1] == f"{BOX['id']}\n{OTHER['id']}\n"
    assert json.loads(run(fake, "ls", "-o", "json")[1]) == {"instances": [BOX, OTHER]}


def test_rm_asks_then_sends_one_request_and_a_refused_line_exits_1(run):
    fake = FakeApi(BOX, OTHER)
    code, _, err = run(fake, "rm", "web-1", "db", input="n\n")
    assert code == 1 and "Terminate web-1 (i-0123456789abcdef0), db (i-0fedcba9876543210)?" in err
    assert "ec2cl: not_confirmed: not confirmed: nothing was done (--yes skips the question)" in err
    assert all(m == "GET" for m, *_ in fake.sent)
    code, out, err = run(fake, "rm", "web-1", "db", "web-1", input="y\n")
    assert code == 1
    [(_, path, _, body)] = [s for s in fake.sent if s[0] == "POST"]
    assert (path, body) == ("/instances/actions", {"action": "delete", "ids": [BOX["id"], OTHER["id"]]})
    assert out.splitlines()[-2:] == ["web-1  i-0123456789abcdef0  shutting-down  sent",
                                    "db     i-0fedcba9876543210  stopped        refused: wrong_state: no"]


def test_an_ambiguous_name_exits_2_before_any_change(run):
    fake = FakeApi(BOX, {**OTHER, "name": "web-1"})
    code, _, err = run(fake, "stop", "web-1")
    assert code == 2 and err.startswith("ec2cl: ambiguous_name: 2 instances are named 'web-1': "
                                        "i-0123456789abcdef0 (running), i-0fedcba9876543210 (stopped)")
    assert all(m == "GET" for m, *_ in fake.sent)
    # One of them shutting down: the other is meant (`ec2cl rm web-1 --yes && ec2cl up web-1`).
    leaving = FakeApi({**OTHER, "name": "web-1", "state": "shutting-down"}, BOX)
    code, out, err = run(leaving, "stop", "web-1")
    assert code == 0, err
    assert [s[3] for s in leaving.sent if s[0] == "POST"] == [{"action": "stop", "ids": [BOX["id"]]}]


def test_help_version_and_completion():
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).stdout.startswith("ec2cl ")
    helped = " ".join(runner.invoke(app, ["--help"]).stdout.split())
    assert "--install-completion" in helped and "Exit codes: 0 done, 1 the API refused, 2 usage" in helped
    for command in ("ls", "up", "ssh", "stop", "start", "rm", "snooze", "events", "budget", "schedule", "ssh-config",
                    "doctor", "login"):
        assert f" {command} " in helped


def test_a_misspelt_name_gets_a_suggestion(run):
    code, _, err = run(FakeApi(BOX, OTHER), "events", "web1")
    assert code == 1 and err == ("ec2cl: instance_not_found: no instance is named 'web1' (terminated ones do not "
                                 "count): `ec2cl ls` lists them; did you mean 'web-1'?\n")
    code, _, err = run(FakeApi(BOX, OTHER), "stop", "web-1", "nosuch")
    assert code == 1 and err.endswith("`ec2cl ls` lists them; nothing was done\n")


def test_against_the_sandbox_up_and_doctor_say_its_addresses_are_made_up(run):
    fake = FakeApi(headers={"X-EC2-Target": "sandbox"})
    code, _, err = run(fake, "up", "web-1", "--ssh-from", "none")
    assert code == 0 and "the local EC2 sandbox: its boxes' addresses are made up" in err
    assert "next: ec2cl ssh" not in err
    code, _, err = run(FakeApi(), "up", "web-1", "--ssh-from", "none")
    assert code == 0 and "next: ec2cl ssh web-1" in err and "sandbox" not in err


def test_login_on_a_server_without_tokens(run):
    code, _, err = run(FakeApi(), "login", "--token-stdin", input="anything\n")
    assert code == 2 and "asks for no token (its API_TOKEN and API_TOKENS_FILE are unset)" in err


def test_an_empty_list_says_so(run):
    code, out, err = run(FakeApi(), "ls")
    assert code == 0 and out == "NAME  ID  STATE  TYPE  PUBLIC IP  NEXT\n"
    assert err == "ec2cl: no instances yet: `ec2cl up NAME` launches one\n"


@pytest.mark.parametrize("answer, message", [
    (httpx.Response(200, text="<html>captive portal</html>"), "answered 200 with no JSON"),
    (httpx.Response(200, json={"foo": 1}), "the API's answer lacks what ec2cl reads"),
])
def test_an_answer_that_is_not_the_apis_is_one_line_exit_1(run, answer, message):
    for args in (["ls"], ["budget"], ["stop", "web-1"], ["doctor"]):
        code, out, err = run(lambda request: answer, *args)
        assert code == 1 and message in err + out and "Traceback" not in err + out, (args, err)  # doctor: stdout


def test_control_characters_from_the_api_reach_the_terminal_escaped(run):
    code, out, _ = run(FakeApi({**BOX, "name": "web\x1b]0;pwned\x07"}), "ls")
    assert code == 0 and "\x1b" not in out and "web\\x1b]0;pwned\\x07" in out
    code, _, err = run(lambda r: httpx.Response(409, json={"detail": "no\x1b[2J", "code": "x"}), "ls")
    assert code == 1 and err == "ec2cl: x: no\\x1b[2J\n"
