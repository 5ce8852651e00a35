"""docs/iam-policy.json, proven: the emulator with IAM enforcement on, an IAM user holding exactly that policy,
the real server and `make doctor` with that user's keys. Everything the service does works; with each
statement removed in turn, the feature that needs it fails with a 403 `aws_access_denied` (or a doctor FAIL
line, or a recorded error for the background loops) naming the missing action, never a bare 5xx.

Where the emulator cannot enforce a statement (docs/IAM.md): it grants only `Resource: "*"` statements without a
`Condition`, and names CloudWatch actions `monitoring:`. So the policy it is given is the file with each
Resource made "*", each Condition dropped and each `cloudwatch:` action also written `monitoring:`; the
scoping and the conditions are checked by reading, as are the statements it never asks for (BY_READING)."""

import asyncio
import copy
import json
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import httpx
import pytest

from app.aws.runner import child_env
from app.config import Settings
from app.doctor import FAIL, Doctor
from app.instances.idle_alarms import USED_KEY
from tests.support.emulator import KEY_NAME, STRICT_MOTO
from tests.support.processes import ROOT, TLS, VENV_BIN, free_port, safe_env, stop_process, wait_http, wait_until
from tests.support.seeding import MANAGED_BY, adopt
from tests.support.server import AWS_SHIM, CATALOG_TEMPLATES, ApiServer, rescope_catalog
from tests.test_doctor import doctor

pytestmark = pytest.mark.integration

POLICY_FILE = ROOT / "docs" / "iam-policy.json"
POLICY = json.loads(POLICY_FILE.read_text())
SERVICE_USER, ADMIN_USER, POLICY_NAME = "ec2-creator-local", "test-admin", "ec2-creator-local"
BODY = {"name": "iam-box", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}
IDLE = {"cpu_below_percent": 5, "for_minutes": 30}
# Statements the emulator never asks for: tag-on-create (it does not check ec2:CreateTags inside RunInstances or
# CreateSecurityGroup) and the free plan (it has no freetier service; `make doctor` skips it in the sandbox).
BY_READING = {"Ec2TagOnCreate", "FreeTierPlan"}


def emulator_policy(without: str | None = None) -> str:
    """The shipped policy as the emulator can enforce it, less the statement `without`."""
    statements = []
    for statement in copy.deepcopy(POLICY["Statement"]):
        if statement["Sid"] == without:
            continue
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        statement["Action"] = actions + [a.replace("cloudwatch:", "monitoring:", 1) for a in actions
                                         if a.startswith("cloudwatch:")]
        statement["Resource"] = "*"
        statement.pop("Condition", None)
        statements.append(statement)
    return json.dumps({"Version": POLICY["Version"], "Statement": statements})


class Account:
    """A moto server enforcing IAM: an admin user (for the test's own look-ups) and the service's user."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A finite INITIAL_NO_AUTH_ACTION_COUNT turns enforcement on; the set-up below runs inside that window,
        # then /moto-api/reset-auth closes it (no request runs unchecked after that).
        with open(tmp / "moto.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                env=safe_env(**STRICT_MOTO, INITIAL_NO_AUTH_ACTION_COUNT="1000"))
        wait_http(f"{self.url}/moto-api/", proc=self.proc)
        iam = self.client("iam", "testing", "testing")
        iam.create_user(UserName=ADMIN_USER)
        iam.put_user_policy(UserName=ADMIN_USER, PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        admin = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
        iam.create_user(UserName=SERVICE_USER)
        iam.put_user_policy(UserName=SERVICE_USER, PolicyName=POLICY_NAME, PolicyDocument=emulator_policy())
        key = iam.create_access_key(UserName=SERVICE_USER)["AccessKey"]
        self.keys = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        httpx.post(f"{self.url}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()
        self.admin = (admin["AccessKeyId"], admin["SecretAccessKey"])
        self.iam = self.client("iam", *self.admin)
        self.ec2 = self.client("ec2", admin["AccessKeyId"], admin["SecretAccessKey"])
        self.cloudwatch = self.client("cloudwatch", admin["AccessKeyId"], admin["SecretAccessKey"])
        self.ec2.create_key_pair(KeyName=KEY_NAME)

    def client(self, service: str, key_id: str, secret: str):
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=key_id,
                            aws_secret_access_key=secret)

    def grant(self, without: str | None = None) -> None:
        """The service user's policy becomes the file's (less one statement), in place."""
        self.iam.put_user_policy(UserName=SERVICE_USER, PolicyName=POLICY_NAME,
                                 PolicyDocument=emulator_policy(without))

    def close(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="module")
def account(tmp_path_factory) -> Iterator[Account]:
    made = Account(tmp_path_factory.mktemp("iam-moto"))
    yield made
    made.close()


@pytest.fixture(scope="module")
def kept(account) -> str:
    """The id of a running instance of ours (see `box`), launched in the account by the admin (in-process) before
    the service starts: its start-up sweep adopts it."""
    ami = account.client("ssm", *account.admin).get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]
    launched = account.ec2.run_instances(
        ImageId=ami, InstanceType=BODY["instance_type"], MinCount=1, MaxCount=1, KeyName=KEY_NAME,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            MANAGED_BY, {"Key": "Name", "Value": "iam-kept"}, {"Key": "team", "Value": "a"}]}])
    return launched["Instances"][0]["InstanceId"]


@pytest.fixture(scope="module")
def server(account, emulator, kept, tmp_path_factory) -> Iterator[ApiServer]:
    """The service with the user's keys. Its database starts as a copy of the run's catalogue (every moto server
    publishes the same one), made this account's: no catalogue fetch at start (four `aws` processes). The calls
    that fetch it (ec2:DescribeInstanceTypes, ssm:GetParameters, ec2:DescribeImages, with these keys) are
    made by `make doctor`'s catalogue check, the same code: with the whole policy (it passes) and without
    SsmPublicAmiParameters (it fails).

    It starts without CloudWatchListAlarms: the alarm keeper lists our alarms at start (once idle alarms were ever
    used here: the record says so, as after any idle alarm), and that failure is what the CloudWatchListAlarms case
    checks (a restart of its own cost a server start and its sweep). The whole policy is back before any test."""
    tmp = tmp_path_factory.mktemp("iam-server")
    shutil.copyfile(CATALOG_TEMPLATES[emulator.url], tmp / "instances.db")
    (tmp / "instances.db").chmod(0o600)
    with closing(sqlite3.connect(tmp / "instances.db")) as conn, conn:
        rescope_catalog(conn, emulator.url, account.url)
        conn.execute("INSERT INTO kv (key, value) VALUES (?, '1')", (USED_KEY,))
    account.grant(without="CloudWatchListAlarms")
    try:
        made = ApiServer(tmp, account.url, **account.keys)
        wait_until(lambda: "cannot list CloudWatch alarms" in made.server_log(), timeout=20, interval=0.2)
    finally:
        account.grant()
    yield made
    made.stop()


@pytest.fixture(scope="module")
def api(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as client:
        yield client


@pytest.fixture(scope="module")
def box(api, kept) -> str:
    """A running instance of ours, the target of the refusals: launched in the account with our ManagedBy tag (by
    the admin, in-process; `kept`) and adopted by the service's start-up sweep with the whole policy, not created
    (its group, the launch, the sweep after it, and its group's delete at the end: the create, the SSH rule and
    the group are proven by _create_with_group and the whole-policy lifecycle)."""
    wait_until(lambda: api.get(f"/instances/{kept}").status_code == 200, timeout=30, interval=0.2)
    [adopted] = adopt(api, [kept])
    assert adopted["tags"] == {"team": "a"}, adopted
    return adopted["id"]


@pytest.fixture
def without(request, account) -> Iterator[str]:
    account.grant(without=request.param)
    yield request.param
    account.grant()


def doctor_of(account: Account, api_url: str) -> Doctor:
    """`make doctor`'s checks in this process, its `aws` processes (through the logging shim) with the service
    user's keys against the account."""
    env = safe_env(**account.keys, AWS_CLI=str(AWS_SHIM), AWS_SHIM_LOG=str(account.tmp / "aws_calls-doctor.log"),
                   AWS_SHIM_REAL=str(VENV_BIN / "aws"))
    settings = Settings(_env_file=None, aws_cli=str(AWS_SHIM), ec2_endpoint_url=account.url, key_name=KEY_NAME,
                        aws_access_key_id=account.keys["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=account.keys["AWS_SECRET_ACCESS_KEY"])
    made = Doctor(settings, api_url)
    made.aws.env = child_env(made.aws.settings, env)
    return made


def denied(got: httpx.Response, action: str) -> None:
    assert (got.status_code, got.json()["code"]) == (403, "aws_access_denied"), got.text
    assert f"the IAM permission {action} " in got.json()["detail"]
    assert "docs/iam-policy.json" in got.json()["detail"]


def test_every_statement_is_proven_here_or_said_to_be_checked_by_reading():
    sids = [s["Sid"] for s in POLICY["Statement"]]
    assert len(sids) == len(set(sids))
    proven = {p.values[0] for p in REMOVALS}
    assert set(sids) == proven | BY_READING and not proven & BY_READING
    docs = (ROOT / "docs" / "IAM.md").read_text()
    for sid in sids:  # a sentence per statement in the docs
        assert f"`{sid}`" in docs, sid


# Granted ahead of the scripts that use them: the per-instance SSH groups (issue 25) close and delete them.
NOT_YET_CALLED = {"ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup"}
# AWS answers sts:GetCallerIdentity for any valid credentials.
NEEDS_NO_STATEMENT = {"sts:GetCallerIdentity"}


def test_the_policy_grants_every_aws_call_of_the_scripts_and_no_other():
    """Read from aws_cli_bash_scripts/ (every `aws` call is an `aws_call SERVICE OPERATION` there): a new script's
    call cannot go unlisted, nor can the policy keep an action no script makes."""
    called = set()
    for script in (ROOT / "aws_cli_bash_scripts").glob("*.sh"):
        text = script.read_text()
        ops = re.findall(r"aws_call (\w+) ([a-z][a-z0-9-]+)", text)
        ops += [("ec2", op) for op in re.findall(r'AWS_OPERATION="([a-z0-9-]+)"', text)]
        called |= {f"{service}:{''.join(w.capitalize() for w in op.split('-'))}" for service, op in ops}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "cloudwatch:PutMetricAlarm"} <= called  # the reading works
    granted = {a for s in POLICY["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert called - NEEDS_NO_STATEMENT <= granted, called - NEEDS_NO_STATEMENT - granted
    assert granted - called <= NOT_YET_CALLED, granted - called - NOT_YET_CALLED
    assert "iam-policy.json" in (ROOT / "docs" / "QUICK_START.md").read_text()  # its permission list is the file


def _create_with_group(api):
    return api.post("/instances", json=BODY | {"name": "iam-grouped", "create_security_group": True})


REMOVALS = [
    pytest.param("Ec2Read", id="Ec2Read"),
    pytest.param("Ec2Launch", id="Ec2Launch"),
    pytest.param("Ec2ManageOwnInstances", id="Ec2ManageOwnInstances"),
    pytest.param("Ec2CreateSshGroups", id="Ec2CreateSshGroups"),
    pytest.param("Ec2ManageOwnSshGroups", id="Ec2ManageOwnSshGroups"),
    pytest.param("SsmPublicAmiParameters", id="SsmPublicAmiParameters"),
    pytest.param("CloudWatchMetrics", id="CloudWatchMetrics"),
    pytest.param("CloudWatchIdleAlarms", id="CloudWatchIdleAlarms"),
    pytest.param("CloudWatchListAlarms", id="CloudWatchListAlarms"),
]


# Runs before the whole-policy test on purpose: the SSH group is created (and cached) only once.
@pytest.mark.parametrize("without", REMOVALS, indirect=True)
def test_without_a_statement_its_feature_names_the_missing_action(without, api, server, account, box, tmp_path):
    if without == "Ec2Read":
        denied(api.post("/instances/sync"), "ec2:DescribeInstances")
    elif without == "Ec2Launch":
        denied(api.post("/instances", json=BODY | {"ssh_from": "none"}), "ec2:RunInstances")  # no rule: not the subject
    elif without == "Ec2ManageOwnInstances":
        denied(api.post(f"/instances/{box}/stop"), "ec2:StopInstances")
        # (ec2:CreateTags stays granted here: Ec2TagOnCreate without its Condition grants it everywhere.)
        denied(api.patch(f"/instances/{box}", json={"tags": {"team": None}}), "ec2:DeleteTags")
        denied(api.delete(f"/instances/{box}"), "ec2:TerminateInstances")
    elif without == "Ec2CreateSshGroups":
        denied(_create_with_group(api), "ec2:CreateSecurityGroup")
    elif without == "Ec2ManageOwnSshGroups":
        denied(_create_with_group(api), "ec2:AuthorizeSecurityGroupIngress")
    elif without == "SsmPublicAmiParameters":
        # The server holds its catalogue (copied, above); `make doctor` reads it anew: its catalogue check, with these
        # keys (two `aws` processes; the whole doctor runs with the whole policy below, and its FAIL line makes
        # it exit 1: tests/test_doctor.py).
        line = asyncio.run(doctor_of(account, server.url).catalog())[0]
        assert (line.status, line.name) == (FAIL, "instance types"), line.render()
        assert "ssm:GetParameters" in line.text
    elif without == "CloudWatchMetrics":
        denied(api.get(f"/instances/{box}/metrics"), "cloudwatch:GetMetricStatistics")
    elif without == "CloudWatchIdleAlarms":
        assert api.patch(f"/instances/{box}", json={"stop_when_idle": IDLE}).status_code == 200

        def error() -> str | None:
            return (api.get(f"/instances/{box}").json()["idle_alarm"] or {}).get("error")

        wait_until(error, timeout=20, interval=0.2)
        assert "the IAM permission cloudwatch:PutMetricAlarm " in str(error())
        # Asked for no more (the retries back off for minutes); the kept box has never held an alarm.
        assert api.patch(f"/instances/{box}", json={"stop_when_idle": None}).status_code == 200
    elif without == "CloudWatchListAlarms":
        # The alarm keeper lists our alarms at start (then every 10 minutes): a background loop, so its
        # failure is a logged warning naming the action; nothing a user asked for fails. The module's server
        # started without this statement (`server`): its start is the one checked.
        line = next(x for x in server.server_log().splitlines() if "cannot list CloudWatch alarms" in x)
        assert "the IAM permission cloudwatch:DescribeAlarms " in line
    else:
        pytest.fail(f"no check for {without}")


def test_the_policy_allows_everything_the_service_does(api, server, account, tmp_path):
    # `make doctor` runs beside the lifecycle (it only reads), to keep the test short.
    with ThreadPoolExecutor(1) as pool:
        checked = pool.submit(doctor, tmp_path, account.url, api_url=server.url, **account.keys)
        _lifecycle(api, account)
        report = checked.result()
    assert report.rc == 0, report.out
    assert report.status("credentials") == "ok" and f"user/{SERVICE_USER}" in report.text("credentials")


def _lifecycle(api, account):
    # The lifecycle, with the SSH group, tags and an idle alarm.
    created = api.post("/instances", json=BODY | {"create_security_group": True, "tags": {"team": "a"},
                                                  "stop_when_idle": IDLE})
    assert created.status_code == 201, created.text
    new = created.json()["id"]
    assert created.json()["security_group_id"]
    wait_until(lambda: (api.get(f"/instances/{new}").json()["idle_alarm"] or {}).get("status") == "set",
               timeout=30, interval=0.2)
    assert f"ec2-creator-local-idle-stop-{new}" in {
        a["AlarmName"] for a in account.cloudwatch.describe_alarms()["MetricAlarms"]}
    assert new in {i["id"] for i in api.get("/instances").json()["instances"]}
    assert api.get(f"/instances/{new}/metrics").status_code == 200
    tagged = api.patch(f"/instances/{new}", json={"tags": {"team": None, "env": "test"}})
    assert tagged.status_code == 200 and tagged.json()["tags"] == {"env": "test"}, tagged.text
    # Auto-stop: the scheduler stops it at its stop_at, with these credentials (ec2:StopInstances: the same call a
    # POST /instances/{id}/stop sends, which the lifecycle no longer makes as well). It stops only what its record
    # shows running (EC2 cannot stop a pending one): a sync records the launch's outcome first.
    wait_until(lambda: api.post("/instances/sync").status_code == 200
               and api.get(f"/instances/{new}").json()["state"] == "running", timeout=30, interval=0.5)
    stop_at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    assert api.patch(f"/instances/{new}", json={"stop_at": stop_at}).status_code == 200

    wait_until(lambda: api.get(f"/instances/{new}").json()["state"] == "stopped", timeout=60, interval=0.2)
    assert account.ec2.describe_instances(InstanceIds=[new])["Reservations"][0]["Instances"][0]["State"]["Name"] \
        == "stopped"
    assert api.post(f"/instances/{new}/start").status_code == 202  # ec2:StartInstances

    # The kept box had its calls refused above; with the whole policy the same calls (ec2:StopInstances, DeleteTags,
    # TerminateInstances, the metrics and the alarm) worked on the new instance: the emulator grants by action, not
    # by instance (Resource "*"), so they are not made again on the box (two `aws` processes).
    assert api.delete(f"/instances/{new}").status_code == 202
    wait_until(lambda: api.get(f"/instances/{new}").json()["idle_alarm"] is None, timeout=30, interval=0.2)
    assert f"ec2-creator-local-idle-stop-{new}" not in {
        a["AlarmName"] for a in account.cloudwatch.describe_alarms()["MetricAlarms"]}
