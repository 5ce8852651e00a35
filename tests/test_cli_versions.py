"""AWS CLI v1 and v2 behave the same to the service: the same errors for the same failures, the same
stored timestamps, the REST lifecycle end to end. Real scripts, the real CLIs (the venv's v1, Debian's
v2), the real emulator; bats runs every script against the emulator with both (integration.bats)."""

import asyncio
import re
import shutil
import sqlite3
from contextlib import closing

import httpx
import pytest

from app.aws.runner import AwsCli, child_env
from app.config import Settings
from app.core.clock import parse_time, stored_time
from app.core.errors import ApiError
from tests.support.processes import AWS_CLI_V1, aws_cli_v2, free_port, safe_env, wait_until
from tests.support.server import CATALOG_TEMPLATES, ApiServer

STORED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def cli(aws_bin, endpoint: str | None, unset: tuple[str, ...] = (), **env: str) -> AwsCli:
    """An AwsCli running `aws_bin`, with the environment a test server would have."""
    base = {k: v for k, v in safe_env(**env).items() if k not in unset}
    settings = Settings(_env_file=None, aws_cli=str(aws_bin), ec2_endpoint_url=endpoint, aws_cli_timeout_seconds=60,
                        aws_access_key_id=base.get("AWS_ACCESS_KEY_ID"),
                        aws_secret_access_key=base.get("AWS_SECRET_ACCESS_KEY"), aws_profile=base.get("AWS_PROFILE"))
    aws = AwsCli(settings)
    aws.env = child_env(settings, base)
    return aws


def failure(aws: AwsCli, script: str, *args: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        asyncio.run(aws.run(script, *args))
    return caught.value


@pytest.mark.parametrize(("case", "expected"), [
    ("unknown instance", (404, "instance_not_found")),
    ("unreachable endpoint", (503, "endpoint_unreachable")),
    ("no credentials", (503, "no_credentials")),
    ("unknown profile", (503, "no_credentials")),
])
def test_the_same_failure_is_the_same_error_with_either_cli(aws_cli_bin, emulator, case, expected):
    if case == "unknown instance":  # EC2 refuses: v1 exits 255, v2 254, same text
        error = failure(cli(aws_cli_bin, emulator.url), "start_instance.sh", "i-0123456789abcdef0")
        assert error.aws_error_code == "InvalidInstanceID.NotFound"
    elif case == "unreachable endpoint":
        error = failure(cli(aws_cli_bin, f"http://127.0.0.1:{free_port()}", AWS_MAX_ATTEMPTS="1"),
                        "list_instances.sh")
    elif case == "no credentials":
        error = failure(cli(aws_cli_bin, emulator.url, unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
                        "get_caller_identity.sh")
    else:
        error = failure(cli(aws_cli_bin, emulator.url, unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                            AWS_PROFILE="nobody"), "get_caller_identity.sh")
        assert "AWS_PROFILE" in error.detail
    assert (error.status_code, error.code) == expected, error.detail


def test_an_operation_the_cli_does_not_know_says_upgrade_the_cli(emulator):
    # Debian's v2 (2.9) predates `aws freetier`: the account-plan fetch says what to do, not "internal error".
    error = failure(cli(aws_cli_v2(), emulator.url), "get_account_plan_state.sh")
    assert (error.status_code, error.code) == (502, "aws_cli_outdated")
    assert error.detail.startswith("This AWS CLI does not know the AWS service that get_account_plan_state.sh calls")
    assert "point AWS_CLI at it" in error.detail


def test_timestamps_differ_on_the_wire_and_are_stored_alike(aws_cli_bin, emulator):
    # Its own instance, listed by id: no emulator reset (what other tests left there is not listed).
    [mine] = emulator.ec2.run_instances(ImageId=emulator.ami(), InstanceType="t3.micro", MinCount=1,
                                        MaxCount=1)["Instances"]
    doc = asyncio.run(cli(aws_cli_bin, emulator.url).run("list_instances.sh", "--all", "--filter-instance-id",
                                                         mine["InstanceId"]))
    [reservation] = doc["Reservations"]
    launched = reservation["Instances"][0]["LaunchTime"]
    # What each CLI prints: v1 `...09.000Z`, v2 `...09+00:00`.
    assert launched.endswith(".000Z" if aws_cli_bin == AWS_CLI_V1 else "+00:00"), launched
    assert parse_time(launched) is not None
    assert STORED.match(stored_time(launched) or "")


def test_rest_lifecycle_with_cli_v2(emulator, fresh_emulator, tmp_path):
    """Create, read, PATCH, stop, start, delete and sync through a server that runs CLI v2 for every script. It
    starts with the run's catalogue but not the CLI version the template holds (v1's, for the same shim path): it
    asks v2 for its own. (The catalogue fetch with v2 is make doctor's, in test_doctor.py's v2 run: the same code;
    here it cost three `aws` processes.)"""
    shutil.copyfile(CATALOG_TEMPLATES[emulator.url], tmp_path / "instances.db")
    with closing(sqlite3.connect(tmp_path / "instances.db")) as conn, conn:
        conn.execute("DELETE FROM kv WHERE key LIKE 'aws_cli_version:%'")
    server = ApiServer(tmp_path, emulator.url, warm_catalog=False, AWS_SHIM_REAL=str(aws_cli_v2()))
    try:
        with httpx.Client(base_url=server.url, timeout=120) as api:
            # No SSH rule (ssh_from none): one `aws` process less; bats runs authorize_ssh.sh with v2.
            created = api.post("/instances", json={"name": "v2-box", "ami": "amazon-linux-2023",
                                                   "instance_type": "t3.micro", "ssh_from": "none"},
                               headers={"Idempotency-Key": "v2-1"})
            assert created.status_code == 201, created.text
            box = created.json()["id"]
            assert api.patch(f"/instances/{box}", json={"auto_stop_minutes": 30}).status_code == 200
            assert api.post("/instances/sync").status_code == 200
            got = api.get(f"/instances/{box}").json()
            assert got["state"] == "running" and got["public_ip"] and got["ami"].startswith("ami-")
            # Each mutation asks for a sweep (describe-instances, with v2) that records the new state: no sync.
            for action, state in (("stop", "stopped"), ("start", "running")):
                assert api.post(f"/instances/{box}/{action}").status_code == 202
                wait_until(lambda s=state: api.get(f"/instances/{box}").json()["state"] == s, timeout=30)
            assert api.delete(f"/instances/{box}").status_code == 202
            wait_until(lambda: api.get(f"/instances/{box}").json()["state"] == "terminated", timeout=30)
            assert [i["id"] for i in api.get("/instances?include_terminated=true").json()["instances"]] == [box]
            assert api.get("/instances").json()["instances"] == []
            assert api.get("/budget").status_code == 200
        with closing(sqlite3.connect(server.db_path)) as conn:
            launched, created_at = conn.execute("SELECT launched_at, created_at FROM instances WHERE id = ?",
                                                (box,)).fetchone()
        assert STORED.match(launched) and STORED.match(created_at), (launched, created_at)
        assert {"--version", "create-security-group", "run-instances", "stop-instances", "start-instances",
                "terminate-instances", "describe-instances"} <= {op for c in server.aws_calls() for op in c}
        assert re.search(r"AWS CLI \S+aws_shim\.sh: aws-cli/2\.", server.server_log())
    finally:
        server.stop()
