"""EC2 is eventually consistent: "gone" is proven, never inferred from one answer; a database serves
several regions. Real server, real scripts and `aws`, real moto; faults injected through AWS_CLI."""

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta

import boto3
import httpx
import pytest

from tests.support.emulator import KEY_NAME
from tests.support.processes import TLS, wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer, aws_error, synced_client

GRACE = 12.0  # two syncs on a loaded 2-core machine (the suites run side by side) must fit inside it
BODY = {"name": "box", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}


# Settings of the module's api_server (conftest.py).
SERVER_ENV = {"RECONCILE_INTERVAL_SECONDS": "3600", "CONSISTENCY_GRACE_SECONDS": str(GRACE),
              "GONE_AFTER_MISSED_SWEEPS": "2"}


@pytest.fixture
def server(api_server):
    return api_server


# The tests that each judge one running instance the module's server tracks from before (box), in the module's order.
POOLED = ("test_a_missing_instance_is_gone_only_when_proven_and_comes_back_when_seen",
          "test_an_instance_the_tagged_sweep_misses_but_ec2_has_stays_tracked",
          "test_not_found_past_the_grace_is_checked_by_a_direct_lookup",
          "test_a_describe_that_is_not_a_describe_answer_is_an_error_not_an_empty_ec2")


@pytest.fixture(scope="module")
def pool(api_server, emulator) -> dict[str, str]:
    """One running instance for each POOLED test, by test name. What these tests are about is how sweeps, lookups and
    transitions judge an instance EC2 misreports, not its create (tests/test_lifecycle.py tests it): they are launched
    in the emulator at once and one sync adopts them all (tests/support/seeding.py), in an EC2 reset for them. An
    EC2 reset and a sync per test cost four of each more. Each test faults and looks at its own instance only (a
    sweep lists the others as they are)."""
    emulator.reset()
    ids = launch_managed(emulator, len(POOLED), name=BODY["name"])
    with synced_client(api_server) as client:
        adopt(client, ids)
    return dict(zip(POOLED, ids, strict=True))


@pytest.fixture
def box(api_server, pool, request):
    """A client on the module's server (no faults) and the test's own instance from the pool."""
    api_server.set_faults()
    with httpx.Client(base_url=api_server.url, timeout=60, verify=TLS) as client:
        yield client, pool[request.node.name]
    api_server.set_faults()


@pytest.fixture
def new_box(api_server, pool, emulator):
    """As box, for the test that needs its instance just launched (within the grace): launched in the pool's EC2
    and adopted by the sync that catches the record up."""
    [instance_id] = launch_managed(emulator, name=BODY["name"])
    with synced_client(api_server) as client:
        adopt(client, [instance_id])
        yield client, instance_id


def started_with_box(emulator, tmp_path, **env: str) -> tuple[ApiServer, str]:
    """A server whose start-up sweep adopts a running instance launched in us-east-1 just before it started
    (for the tests of a restart elsewhere: the first server only has to have it on record)."""
    [instance_id] = launch_managed(emulator, name=BODY["name"])
    server = ApiServer(tmp_path, emulator.url, **env)
    with httpx.Client(base_url=server.url, timeout=60) as api:
        # The start-up sweep adopts it: wait for that (reading the record) rather than sync, which waited for
        # the sweep under way and then ran another (one `aws` process more). adopt() then only checks.
        wait_until(lambda: api.get(f"/instances/{instance_id}").status_code == 200, timeout=30)
        adopt(api, [instance_id])
    return server, instance_id


def grace_passed(server: ApiServer, instance_id: str) -> None:
    """Move the record's times (its launch and, if a sweep missed it, the first miss) GRACE + 1 s into the past,
    as waiting out the grace would: the grace checks read nothing else of the time (recorder.py, instances.py)."""
    past = (datetime.now(UTC) - timedelta(seconds=GRACE + 1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with closing(sqlite3.connect(server.db_path)) as conn, conn:
        changed = conn.execute("UPDATE instances SET created_at = ?, missing_since = CASE WHEN missing_since IS NULL "
                               "THEN NULL ELSE ? END WHERE id = ?", (past, past, instance_id)).rowcount
    assert changed == 1


def state(api: httpx.Client, instance_id: str) -> str:
    return api.get(f"/instances/{instance_id}").json()["state"]


def actions(api: httpx.Client, instance_id: str) -> list[str]:
    return [e["action"] for e in api.get(f"/instances/{instance_id}/events").json()["events"]]


def test_a_missing_instance_is_gone_only_when_proven_and_comes_back_when_seen(box, server):
    api, instance_id = box
    server.set_faults({"op": "describe-instances", "hide": [instance_id]})  # EC2 "forgets" it for a while
    first = api.post("/instances/sync").json()
    assert instance_id in first["missing"] and instance_id not in first["gone"]
    assert state(api, instance_id) == "running"  # one missing answer proves nothing
    second = api.post("/instances/sync").json()
    assert instance_id not in second["gone"] and state(api, instance_id) == "running"  # two, but within the grace

    grace_passed(server, instance_id)
    before = len(server.aws_calls())
    third = api.post("/instances/sync").json()
    assert instance_id in third["gone"]  # two sweeps, the grace, and a direct lookup by id agree
    lookups = [c for c in server.aws_calls()[before:] if "describe-instances" in c]
    assert len(lookups) == 2 and '"instance-id"' in "".join(lookups[1]) and "tag:ManagedBy" not in "".join(lookups[1])
    assert state(api, instance_id) == "terminated" and actions(api, instance_id)[-1] == "gone"

    server.set_faults()  # EC2 shows it again: it was running all along
    fourth = api.post("/instances/sync").json()
    assert instance_id in fourth["updated"]
    assert state(api, instance_id) == "running"
    assert actions(api, instance_id)[-1] == "reappeared"
    assert instance_id in [i["id"] for i in api.get("/instances").json()["instances"]]
    assert api.post(f"/instances/{instance_id}/stop").status_code == 202  # and it can be managed again


def test_an_instance_the_tagged_sweep_misses_but_ec2_has_stays_tracked(box, server):
    api, instance_id = box
    # The ManagedBy-filtered sweep misses it (tag removed by hand, or lag); a lookup by id still finds it.
    server.set_faults({"op": "describe-instances", "match": ["tag:ManagedBy"], "hide": [instance_id]})
    result = api.post("/instances/sync").json()
    assert instance_id in result["missing"] and instance_id not in result["gone"]
    grace_passed(server, instance_id)  # missed for longer than the grace
    for _ in range(2):
        result = api.post("/instances/sync").json()
        assert instance_id not in result["gone"]
    result = api.post("/instances/sync").json()
    assert instance_id not in result["gone"] and state(api, instance_id) == "running"
    assert "gone" not in actions(api, instance_id)


def test_not_found_from_a_transition_within_the_grace_is_a_retryable_503(new_box, server):
    api, instance_id = new_box  # just launched: within the grace (an API create cost three `aws` processes more)
    server.set_faults({"op": "stop-instances", "times": 1, "fail": aws_error(
        "InvalidInstanceID.NotFound", "StopInstances", f"The instance ID '{instance_id}' does not exist")})
    response = api.post(f"/instances/{instance_id}/stop")
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "instance_not_visible_yet"
    # The grace's answer, not the direct lookup's (which is a 503 with the same code once the grace is over).
    assert "it was launched" in response.json()["detail"], response.text
    assert 1 <= int(response.headers["Retry-After"]) <= GRACE + 1
    assert state(api, instance_id) in ("pending", "running")
    assert "terminated" not in [e["to_state"] for e in api.get(f"/instances/{instance_id}/events").json()["events"]]
    assert api.post(f"/instances/{instance_id}/stop").status_code == 202  # the retry works


def test_not_found_past_the_grace_is_checked_by_a_direct_lookup(box, server):
    api, instance_id = box
    grace_passed(server, instance_id)  # launched longer ago than the grace
    not_found = aws_error("InvalidInstanceID.NotFound", "StopInstances",
                          f"The instance ID '{instance_id}' does not exist")
    server.set_faults({"op": "stop-instances", "times": 1, "fail": not_found})
    response = api.post(f"/instances/{instance_id}/stop")  # EC2 still lists it: not gone
    assert response.status_code == 503 and response.json()["code"] == "instance_not_visible_yet"
    assert state(api, instance_id) == "running"

    # Now EC2 really has no such instance: NotFound, and the direct lookup agrees.
    server.set_faults({"op": "stop-instances", "fail": not_found},
                      {"op": "describe-instances", "hide": [instance_id]})
    response = api.post(f"/instances/{instance_id}/stop")
    assert response.status_code == 409 and response.json()["code"] == "instance_gone"
    assert state(api, instance_id) == "terminated"


NOT_A_DESCRIBE = ["", "{}", "not json", '{"Reservations": "none"}', "[]"]


def test_a_describe_that_is_not_a_describe_answer_is_an_error_not_an_empty_ec2(box, server):
    api, instance_id = box  # one instance for every answer (each used to launch its own)
    for output in NOT_A_DESCRIBE:
        server.set_faults({"op": "describe-instances", "stdout": output})
        response = api.post("/instances/sync")
        assert response.status_code == 502, (output, response.text)
        assert response.json()["code"] == "aws_bad_output", output
        assert state(api, instance_id) == "running", output
        # Not a miss either: a run of such answers can never add up to "gone" (three syncs each, as before,
        # could not have shown that: a miss turns into gone only a grace after the first one).
        assert misses(server, instance_id) == (0, None), output
    server.set_faults()


def misses(server: ApiServer, instance_id: str) -> tuple[int, str | None]:
    """How many sweeps in a row have not listed the instance, and since when (the record's own count)."""
    with closing(sqlite3.connect(server.db_path)) as conn:
        row = conn.execute("SELECT missed_sweeps, missing_since FROM instances WHERE id = ?", (instance_id,))
        return row.fetchone()


# -- several regions in one database ---------------------------------------------------------------
def region_of(call: list[str]) -> str:
    return call[call.index("--region") + 1]


def launch_statuses(db_path) -> dict[str, str]:
    with closing(sqlite3.connect(db_path)) as conn:
        return dict(conn.execute("SELECT request_id, status FROM launches"))


def test_after_a_restart_in_another_region_the_first_regions_instances_are_kept_swept_stopped_and_counted(
        emulator, fresh_emulator, tmp_path):
    """One restart in another region for all of these (each test that made its own cost two server starts, an
    instance and their sweeps): what the first region had is kept, swept there, managed there and counted, and
    a new instance goes to the new region."""
    east_env = {"CONSISTENCY_GRACE_SECONDS": "0", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    east, kept = started_with_box(fresh_emulator, tmp_path, **east_env)
    east.stop()

    # Launches the east server left unresolved (it crashed mid-create): one whose instance EC2 shows, one that
    # never launched. Both were sent to us-east-1 and are past their deadline.
    long_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with closing(sqlite3.connect(east.db_path)) as conn, conn:
        for request_id in ("req-launched", "req-lost"):
            conn.execute("INSERT INTO launches (request_id, body_hash, body, status, created_at, updated_at, region, "
                         "endpoint) VALUES (?, 'h', ?, 'pending', ?, ?, 'us-east-1', ?)",
                         (request_id, json.dumps({"request": {"name": "crashed", "auto_stop_minutes": 30}}),
                          long_ago, long_ago, emulator.url))
    [crashed] = launch_managed(fresh_emulator, name=None, tags={"RequestId": "req-launched"})

    west = ApiServer(tmp_path, emulator.url, **(east_env | {"AWS_REGION": "us-west-2",
                                                            "AWS_DEFAULT_REGION": "us-west-2"}))
    try:
        with httpx.Client(base_url=west.url, timeout=60, verify=TLS) as api:
            first = api.post("/instances/sync")
            first.raise_for_status()
            assert kept not in first.json()["missing"] + first.json()["gone"]
            # The launches recorded for us-east-1 are resolved there: one adopted in its region, one lost.
            statuses = launch_statuses(west.db_path)
            assert (statuses["req-launched"], statuses["req-lost"]) == ("launched", "lost")
            assert api.get(f"/instances/{crashed}").json()["region"] == "us-east-1"

            # Each sweep lists every region with instances on record: one describe-instances per region. None of
            # them judges the first region's instance missing, let alone gone (no grace here).
            for _ in range(3):
                mark = len(west.aws_calls())
                result = api.post("/instances/sync").json()
                assert kept not in result["missing"] + result["gone"]
                describes = [c for c in west.aws_calls()[mark:] if "describe-instances" in c]
                assert sorted(region_of(c) for c in describes) == ["us-east-1", "us-west-2"], describes
            row = api.get(f"/instances/{kept}").json()
            assert (row["state"], row["region"]) == ("running", "us-east-1")
            assert kept in [i["id"] for i in api.get("/instances").json()["instances"]]

            # A new instance is launched in the server's region, us-west-2.
            ec2_west = boto3.client("ec2", endpoint_url=emulator.url, region_name="us-west-2",
                                    aws_access_key_id="testing", aws_secret_access_key="testing")
            ec2_west.create_key_pair(KeyName=KEY_NAME)
            created = api.post("/instances", json=BODY | {"name": "west-box", "ssh_from": "none"})
            assert created.status_code == 201, created.text
            assert created.json()["region"] == "us-west-2"
            launch = [c for c in west.aws_calls() if "run-instances" in c][-1]
            assert region_of(launch) == "us-west-2"
            west_ids = [i["InstanceId"] for r in ec2_west.describe_instances()["Reservations"] for i in r["Instances"]]
            assert created.json()["id"] in west_ids and kept not in west_ids

            # The budget is the account's: the east instances still count.
            counted = {i["id"] for i in api.get("/budget").json()["instances"]}
            assert {kept, crashed} <= counted

            # A stop goes to us-east-1, and the sweep there carries the record on from `stopping`.
            assert api.post(f"/instances/{kept}/stop").status_code == 202
            stop = [c for c in west.aws_calls() if "stop-instances" in c][-1]
            assert region_of(stop) == "us-east-1"
            wait_until(lambda: state(api, kept) == "stopped", timeout=20)
            # So does a start, from `pending`.
            started = api.post(f"/instances/{kept}/start")
            assert started.status_code == 202 and started.json()["state"] == "pending", started.text
            assert region_of([c for c in west.aws_calls() if "start-instances" in c][-1]) == "us-east-1"
            wait_until(lambda: state(api, kept) == "running", timeout=20)

            # An auto-stop that falls due is carried out in us-east-1.
            mark = len(west.aws_calls())
            soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
            assert api.patch(f"/instances/{kept}", json={"stop_at": soon}).status_code == 200
            wait_until(lambda: fresh_emulator.instances()[kept]["State"]["Name"] == "stopped", timeout=20)
            stops = [c for c in west.aws_calls()[mark:] if "stop-instances" in c]
            assert [region_of(c) for c in stops] == ["us-east-1"] and kept in stops[0]
            wait_until(lambda: "auto_stop" in [e["source"] for e in
                                               api.get(f"/instances/{kept}/events").json()["events"]])
    finally:
        west.stop()


# -- several accounts in one database ------------------------------------------------------------
OTHER_ACCOUNT = "210987654321"


def test_a_restart_with_another_accounts_credentials_judges_nothing_of_the_first(server, fresh_emulator):
    """The module's last test: the module's server, with the instance on record, is restarted with other credentials
    (a server of its own to record it cost a start and its start-up sweep; the sync here adopts it). It restarts with
    no grace and gone at the first miss, as that one did: a single miss judged would show."""
    [kept] = launch_managed(fresh_emulator, name=BODY["name"])
    with synced_client(server) as api:
        adopt(api, [kept])
    server.stop()

    # The same region, other credentials: EC2 there holds nothing, and STS names another account.
    server.set_faults({"op": "get-caller-identity", "stdout": json.dumps(
                           {"UserId": "AIDAOTHER", "Account": OTHER_ACCOUNT,
                            "Arn": f"arn:aws:iam::{OTHER_ACCOUNT}:user/other"})},
                      {"op": "describe-instances", "hide": "all", "owner": OTHER_ACCOUNT})
    server.env |= {"CONSISTENCY_GRACE_SECONDS": "0", "GONE_AFTER_MISSED_SWEEPS": "1"}
    server.start()
    with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as api:
        for _ in range(3):
            result = api.post("/instances/sync").json()
            assert kept not in result["gone"] + result["missing"]
        assert api.get(f"/instances/{kept}").json()["state"] == "running"  # last known state, kept
        response = api.post(f"/instances/{kept}/stop")
        assert response.status_code == 409 and response.json()["code"] == "other_account"
        assert OTHER_ACCOUNT in response.json()["detail"]
    assert fresh_emulator.instances()[kept]["State"]["Name"] == "running"
