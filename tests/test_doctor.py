"""`make doctor` (scripts/doctor.sh): the real script, the real AWS CLI (v1 and v2) behind the logging
shim, the real emulator, and the real API server for the /health line (and for that server's own line about its
CLI)."""

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.config import Settings
from app.core.errors import UpstreamError
from app.doctor import FAIL, OK, SKIP, WARN, Doctor
from app.doctor import main as doctor_main
from tests.support.emulator import KEY_NAME
from tests.support.processes import AWS_CLI_V1, ROOT, free_port, safe_env, wait_until
from tests.support.receivers import MailServer
from tests.support.server import AWS_SHIM

DOCTOR = ROOT / "scripts" / "doctor.sh"
LINE = re.compile(r"^(ok|warn|FAIL|skip) +([^:]+): (.*)$")
READS = {"--version", "get-caller-identity", "describe-key-pairs", "describe-subnets", "describe-instance-types",
         "get-parameters", "describe-images"}


class Report:
    def __init__(self, proc: subprocess.CompletedProcess, calls: list[list[str]], seconds: float) -> None:
        self.rc, self.out, self.calls, self.seconds = proc.returncode, proc.stdout, calls, seconds
        self.lines: dict[str, tuple[str, str]] = {}
        for line in proc.stdout.splitlines():
            if match := LINE.match(line):
                self.lines[match.group(2)] = (match.group(1), match.group(3))

    def status(self, name: str) -> str:
        return self.lines[name][0]

    def text(self, name: str) -> str:
        return self.lines[name][1]


def doctor(tmp: Path, endpoint: str, aws: Path = AWS_CLI_V1, api_url: str = "http://127.0.0.1:9",
           args: tuple[str, ...] = (), **settings: str) -> Report:
    """Run scripts/doctor.sh as `make doctor` does against the sandbox; every `aws` it runs is logged."""
    log = tmp / f"aws_calls-{time.monotonic_ns()}.log"
    log.touch()
    key = tmp / "key.pem"
    if not key.exists():
        key.write_text("-----BEGIN RSA PRIVATE KEY-----\n")
        key.chmod(0o600)
    env = safe_env(**{"AWS_CLI": str(AWS_SHIM), "AWS_SHIM_LOG": str(log), "AWS_SHIM_REAL": str(aws),
                      "EC2_TARGET": "sandbox", "EC2_ENDPOINT_URL": endpoint, "KEY_NAME": KEY_NAME,
                      "SSH_KEY_PATH": str(key), **settings})
    started = time.monotonic()
    proc = subprocess.run([str(DOCTOR), "--api-url", api_url, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    calls = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return Report(proc, calls, time.monotonic() - started)


def test_everything_present_exits_0_and_only_reads(aws_cli_bin, emulator, api_server, tmp_path):
    # The session's emulator as it is (no reset: the doctor changes nothing, and that is checked against what was
    # there before).
    before = emulator.ec2.describe_key_pairs()["KeyPairs"]
    states = {i: d["State"]["Name"] for i, d in emulator.instances().items()}
    report = doctor(tmp_path, emulator.url, aws_cli_bin, api_url=api_server.url)
    assert report.rc == 0, report.out
    major = "1" if aws_cli_bin == AWS_CLI_V1 else "2"
    assert report.lines["aws"] == (OK, report.text("aws")) and f"aws-cli/{major}." in report.text("aws")
    assert report.status("target") == OK and emulator.url in report.text("target")
    # The budget in force, as the server started with these settings has it (EC2_TARGET=sandbox, no BUDGET_USD).
    assert report.text("target").endswith("; budget 100.00 USD a month (SANDBOX_BUDGET_USD, BUDGET_USD unset)")
    assert report.lines["region"] == (OK, "us-east-1 (AWS_REGION)")
    assert report.status("credentials") == OK and "account 123456789012" in report.text("credentials")
    assert report.lines["key pair"] == (OK, f"{KEY_NAME} exists in us-east-1")
    assert report.status("private key") == OK and "(mode 0600)" in report.text("private key")
    assert report.status("default VPC") == OK and "us-east-1a" in report.text("default VPC")
    assert report.lines["instance types"] == (OK, "t3.micro, t4g.micro: free-tier eligible in us-east-1")
    # The emulator publishes the Amazon Linux parameters only: the others are named as missing.
    assert report.status("AMI aliases") == WARN
    assert "amazon-linux-2023 (x86_64, arm64)" in report.text("AMI aliases")
    assert "ubuntu-24.04" in report.text("AMI aliases").split("; ")[-1]
    assert report.status("free plan") == SKIP
    assert report.lines["API"] == (OK, f"{api_server.url}/health answers 200")
    assert report.out.rstrip().endswith("=> a create would work")
    # docs/QUICK_START.md's sample shows these checks, in this order, with these outcomes.
    sample = (ROOT / "docs" / "QUICK_START.md").read_text().split("<!-- doctor-sample -->", 1)[1].split("```")[1]
    shown = [(m.group(1), m.group(2)) for line in sample.splitlines() if (m := LINE.match(line))]
    assert shown == [(status, name) for name, (status, _) in report.lines.items()]
    # Nothing but reads, and nothing changed.
    assert report.calls and all(READS & set(call) for call in report.calls), report.calls
    assert {i: d["State"]["Name"] for i, d in emulator.instances().items()} == states  # none launched or changed
    assert emulator.ec2.describe_key_pairs()["KeyPairs"] == before


# The server's own report of its CLI (in test_cli_versions.py before; it shares this module's server, which
# only answers the doctor's /health line here, instead of starting one of its own).
def test_the_server_logs_its_cli_and_version_once_per_executable(api_server):
    wait_until(lambda: "AWS CLI " in api_server.server_log() and "aws-cli/1." in api_server.server_log())
    assert "v1 is in maintenance mode" in api_server.server_log()
    versions = [c for c in api_server.aws_calls() if c == ["--version"]]
    assert versions == []  # known from the catalogue template: no `aws --version` process for this server


@pytest.fixture(scope="module")
def troubles(emulator, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """Two doctor runs for the checks that judge local things, each on its own line (the key pair, the private
    key file, mail): a run costs a Python start and up to seven `aws` processes, so one run holds several
    troubles at once. `broken`: KEY_NAME names no key pair, the private key is readable by others, SMTP answers
    and a notify URL is set. `unreachable`: the endpoint does not answer (its AWS checks are skipped, the local
    ones still run: two `aws` processes), the private key file is missing and nothing listens for mail. (A third
    run once held the missing key file and the silent SMTP after the key pair was made: seven `aws` processes
    for two local lines; a key pair that exists is ok in test_everything_present...)"""
    tmp = tmp_path_factory.mktemp("doctor-troubles")  # (no emulator reset: no test makes a key pair of that name)
    loose = tmp / "loose.pem"
    loose.write_text("key")
    loose.chmod(0o644)
    mail = MailServer().start()
    try:
        broken = doctor(tmp, emulator.url, KEY_NAME="doctor-missing", SSH_KEY_PATH=str(loose), **mail.settings(),
                        NOTIFY_URLS="json://127.0.0.1:9/hook/tok")
    finally:
        mail.stop()
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = doctor(tmp, nowhere, SSH_KEY_PATH=str(tmp / "nowhere.pem"), **mail.settings())  # nothing listens
    yield SimpleNamespace(broken=broken, unreachable=unreachable, nowhere=nowhere, loose=loose, mail=mail,
                          endpoint=emulator.url)


def test_missing_key_pair_fails_with_the_create_key_pair_command(troubles):
    report = troubles.broken
    assert report.rc == 1, report.out
    status, text = report.lines["key pair"]
    assert status == FAIL and "KEY_NAME=doctor-missing does not exist in us-east-1" in text
    fix = report.out.split("key pair: ", 1)[1].splitlines()[0]
    # The private key goes where SSH_KEY_PATH says.
    assert (f"aws --endpoint-url {troubles.endpoint} --region us-east-1 ec2 create-key-pair --key-name "
            f"doctor-missing --query KeyMaterial --output text > {troubles.loose}") in fix
    assert report.status("default VPC") == OK  # the other checks still ran
    # Only the key pair fails: the loose private key and the mail lines below do not.
    assert report.out.rstrip().endswith("=> a create would fail: fix key pair")


def test_a_loose_or_missing_private_key_warns_but_a_create_would_work(troubles):
    report = troubles.broken  # fails on its key pair alone (above)
    assert report.lines["private key"][0] == WARN and "mode 0644" in report.text("private key")
    assert f"-> fix: `chmod 600 {troubles.loose}`" in report.out
    report = troubles.unreachable  # fails on its endpoint alone (below): a missing key file does not fail it
    assert report.status("private key") == WARN and "does not exist" in report.text("private key")
    assert report.out.rstrip().endswith("=> a create would fail: fix endpoint")


def test_smtp_is_checked_without_sending_and_never_fails_a_create(troubles):
    report, port = troubles.broken, troubles.mail.port  # fails on its key pair alone (above)
    assert report.status("email") == OK and f"127.0.0.1:{port} connects" in report.text("email")
    assert report.lines["notify URLs"] == (OK, "1 valid (json); not contacted (that would send a message)")
    assert troubles.mail.messages == [] and "tok" not in report.out
    report = troubles.unreachable  # nothing listens there now; fails on its endpoint alone (below)
    assert report.status("email") == WARN and "SMTP 127.0.0.1" in report.text("email")
    assert report.out.rstrip().endswith("=> a create would fail: fix endpoint")


def test_unreachable_endpoint_fails_fast_with_one_clear_line(troubles):
    report, nowhere = troubles.unreachable, troubles.nowhere
    assert report.rc == 1, report.out
    status, text = report.lines["endpoint"]
    assert status == FAIL and f"{nowhere} cannot be reached" in text
    assert "-> fix: start the emulator: `make sandbox`" in report.out
    assert report.status("AWS checks") == SKIP and "key pair" not in report.lines
    # Fast: the version and one call that could not connect, nothing more.
    assert [c for c in report.calls if "--version" not in c] == [report.calls[-1]]
    assert "get-caller-identity" in report.calls[-1]
    assert report.seconds < 30


def test_a_bad_setting_is_one_line_and_no_aws_call(tmp_path, emulator):
    report = doctor(tmp_path, emulator.url, BUDGET_USD="0")
    assert report.rc == 1
    assert report.status("settings") == FAIL and "BUDGET_USD" in report.text("settings")
    assert report.calls == []


def test_help_and_usage(capsys):
    proc = subprocess.run([str(DOCTOR), "-h"], capture_output=True, text=True, env=safe_env())
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: doctor.sh")
    # Any other argument goes to `python -m app.doctor` (exec: its exit status and stderr are the script's), as
    # --api-url does in every run above: its usage error is checked in this process, not in a Python of its own.
    with pytest.raises(SystemExit) as exited:
        doctor_main(["--bogus"])
    assert exited.value.code == 2 and "--bogus" in capsys.readouterr().err


# The free-plan line needs real AWS (the emulator has no freetier service): its wording, from a stub.
class _Plan:
    def __init__(self, answer: dict | Exception) -> None:
        self.answer = answer

    async def run(self, script: str, *args: str, **kw) -> dict:
        assert script == "get_account_plan_state.sh"
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(("answer", "status", "words"), [
    ({"accountPlanType": "FREE", "accountPlanStatus": "ACTIVE", "accountPlanExpirationDate": "2027-01-10T00:00:00Z",
      "accountPlanRemainingCredits": {"amount": 87.5, "unit": "USD"}}, OK,
     ["FREE plan, ACTIVE, 87.5 USD of credits left, ends 2027-01-10", "closes"]),
    ({"accountPlanType": "PAID", "accountPlanStatus": "ACTIVE"}, OK, ["PAID plan", "billed"]),
    (UpstreamError("This AWS CLI does not know the command", code="aws_cli_outdated"), WARN,
     ["not available", "install a current AWS CLI v2"]),
])
def test_free_plan_line_against_aws(answer, status, words):
    settings = Settings(_env_file=None, ec2_endpoint_url=None, ec2_target=None)
    doc = Doctor(settings, "http://127.0.0.1:9")
    doc.aws = _Plan(answer)  # type: ignore[assignment]
    line = asyncio.run(doc.plan())
    assert line.status == status
    rendered = line.render()
    assert all(w in rendered for w in words), rendered


def test_ssh_access_names_the_instances_whose_group_does_not_admit_this_machine(tmp_path):
    """Issue 25: after an address change (home -> office), make doctor says which instances' rules shut it out."""
    from app.store import Database
    from tests.support.checkip import CheckIp

    db = Database(tmp_path / "instances.db")
    db.migrate()
    endpoint = "http://127.0.0.1:9"
    common = {"name": "box", "state": "running", "tags": {}, "created_at": "t0", "updated_at": "t0",
              "endpoint": endpoint, "region": "us-east-1"}
    db.upsert_instance(common | {"id": "i-00000000000000001", "ssh_group": "sg-00000001", "ssh_from": "203.0.113.7/32"})
    db.upsert_instance(common | {"id": "i-00000000000000002", "ssh_group": "sg-00000002",
                                 "ssh_from": "198.51.100.0/24"})
    db.upsert_instance(common | {"id": "i-00000000000000003", "ssh_group": "sg-00000003", "ssh_from": "none"})
    db.upsert_instance(common | {"id": "i-00000000000000004"})  # no group of its own: not judged
    checkip = CheckIp()
    try:
        settings = Settings(_env_file=None, ec2_endpoint_url=endpoint, my_ip_url=checkip.url,
                            database_url=str(tmp_path / "instances.db"))
        line = asyncio.run(Doctor(settings, "http://127.0.0.1:8000").ssh_access())
        assert line.status == WARN and line.name == "SSH access", line.render()
        assert "2 of 3 instance(s) do not admit this machine (203.0.113.7)" in line.text
        assert "i-00000000000000002 (198.51.100.0/24)" in line.text and "i-00000000000000003 (none)" in line.text
        assert "i-00000000000000001" not in line.text and "/ssh-access" in (line.fix or "")
        with db.transaction():
            for instance_id in ("i-00000000000000002", "i-00000000000000003"):
                db.update_instance(instance_id, {"state": "terminated"})
        line = asyncio.run(Doctor(settings, "http://127.0.0.1:8000").ssh_access())
        assert line.status == OK and "all 1 instance(s) admit this machine (203.0.113.7)" in line.text
    finally:
        checkip.close()
    missing = Settings(_env_file=None, database_url=str(tmp_path / "none.db"))
    assert asyncio.run(Doctor(missing, "http://127.0.0.1:8000").ssh_access()).status == SKIP
    assert not (tmp_path / "none.db").exists()  # the check creates no database
