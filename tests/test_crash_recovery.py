"""Nothing lost across crashes and store failures: kill -9 mid-create, a database that refuses writes
after EC2 launched, a database of the original project, pruning. Real server, scripts, `aws`, moto."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from app.store import SCHEMA_VERSION, Database
from tests.store.test_migrations import ORIGINAL_SCHEMA
from tests.support.processes import ROOT, descendants, safe_env, wait_until
from tests.support.seeding import launch_managed
from tests.support.server import CATALOG_TEMPLATES, ApiServer, aws_error

# No SSH rule (ssh_from none): no test here is about SSH, and the rule is one `aws` process per create.
BODY = {"name": "once", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "ssh_from": "none"}


# Recovery is the periodic loop's work: it sweeps every SWEEP_EVERY seconds here. Each sweep is an `aws` process,
# and every second of a test's wall was one at an interval of 1 s; each wait below is on a condition, with a timeout
# of 25 s or more after what it waits for (a delayed launch of 15 s, a grace of 8 s, a lock of 13 s) is over: the
# sweep that resolves it may come up to 5 s late, and under load its `aws` process takes seconds more.
SWEEP_EVERY = "5"


OLD = "i-0123456789abcdef0"  # the pruning test's instance, terminated in 2020


def seed_old_history(db_path: Path, emulator_url: str) -> None:
    """For the pruning test: an instance terminated long ago, events of 2020 and a recent one, and launches of 2020
    (finished ones and an unresolved one, of another region and endpoint: no sweep here looks at it)."""
    # A copy of the catalogue template, as every test server starts with (its four `aws` processes fetching the
    # AMI catalogue are not what this tests); migrate() finds it current.
    shutil.copyfile(CATALOG_TEMPLATES[emulator_url], db_path)
    db = Database(db_path)
    db.migrate()
    db.upsert_instance({"id": OLD, "name": "old", "state": "terminated", "tags": {},
                        "created_at": "2020-01-01T00:00:00.000000Z", "updated_at": "2020-01-01T00:00:00.000000Z"})
    db.add_event(OLD, "create", None, "pending", "api", at="2020-01-01T00:00:00.000000Z")
    # Its state when last month began, which the budget counts from: kept whatever the retention.
    db.add_event(OLD, "observe", "pending", "running", "reconcile", at="2020-01-01T00:01:00.000000Z")
    db.add_event(OLD, "delete", "running", "terminated", "api")  # recent: kept
    db.dispose()
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        for request_id, status in (("old-done", "launched"), ("old-failed", "failed"), ("old-pending", "pending")):
            conn.execute("INSERT INTO launches (request_id, body_hash, body, status, created_at, updated_at, "
                         "region, endpoint) VALUES (?, 'h', '{}', ?, '2020-01-01T00:00:00.000000Z', "
                         "'2020-01-01T00:00:00.000000Z', 'eu-north-1', 'elsewhere')", (request_id, status))


@pytest.fixture(scope="module")
def module_server(emulator, tmp_path_factory):
    """The module's server, from the pruning test on (the module's second): it starts on seed_old_history()'s
    database with a retention of 30 days (the events it writes are recent: nothing else is pruned), in an EC2 reset
    just before (the tests after the pruning one reset nothing)."""
    tmp = tmp_path_factory.mktemp("crash_recovery")
    seed_old_history(tmp / "instances.db", emulator.url)
    emulator.reset()
    srv = ApiServer(tmp, emulator.url, RECONCILE_INTERVAL_SECONDS=SWEEP_EVERY, EVENTS_RETENTION_DAYS="30")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def module_env(module_server) -> dict[str, str]:
    """The settings the module's server starts with (a kill test restarts it with others)."""
    return dict(module_server.env)


@pytest.fixture
def shared(module_server, module_env):
    """The module's server, for the tests that do not kill it: each looks only at its own instance, by a name no
    other test uses, and counts the launches after its mark. A server start of its own each cost one, and its
    start-up sweep. It resets nothing (module_server started in an EC2 reset for it)."""
    if module_server.env != module_env:  # a kill test restarted it with other settings
        module_server.stop()
        module_server.env = dict(module_env)
        module_server.start()
    module_server.set_faults()
    yield module_server
    module_server.set_faults()


@pytest.fixture
def server(shared):
    """The module's server, for the two tests that kill it (the module's last): each looks at its own key's
    instance by a name no other test uses and counts the launches after its mark. A server of their own each cost
    a start, its start-up sweep and an EC2 reset."""
    return shared


def launches(server: ApiServer) -> list[list[str]]:
    return [c for c in server.aws_calls() if "run-instances" in c]


def named(emulator, name: str) -> list[str]:
    return [i for i, d in emulator.instances().items()
            if {t["Key"]: t["Value"] for t in d.get("Tags", [])}.get("Name") == name]


def request_tag(call: list[str]) -> str:
    specs = json.loads(call[call.index("--tag-specifications") + 1])
    return {t["Key"]: t["Value"] for t in specs[0]["Tags"]}["RequestId"]


def post_in_background(server: ApiServer, key: str, name: str) -> threading.Thread:
    def post() -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                client.post("/instances", json=BODY | {"name": name}, headers={"Idempotency-Key": key})
        except httpx.HTTPError:
            pass  # the server dies under it

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def test_a_database_of_the_original_project_converges_and_one_bad_row_spoils_nothing(emulator, fresh_emulator,
                                                                                      tmp_path):
    with sqlite3.connect(tmp_path / "instances.db") as conn:
        conn.execute(ORIGINAL_SCHEMA)  # name NOT NULL, as the original project made it
        conn.execute("CREATE TRIGGER poison BEFORE INSERT ON instances WHEN NEW.name = 'poison' "
                     "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
    [nameless] = launch_managed(fresh_emulator, name=None)
    [poison] = launch_managed(fresh_emulator, name="poison")
    [fine] = launch_managed(fresh_emulator, name="fine")
    [legacy] = launch_managed(fresh_emulator, name="legacy")
    unknown = "i-0000000000000dead"  # recorded by the original project, unknown to this EC2
    with sqlite3.connect(tmp_path / "instances.db") as conn:
        conn.executemany("INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?)", [
            (legacy, "legacy", None, "ami-0123456789abcdef0", "t3.micro", "stopped", None, None, "awscli",
             "2026-02-20 10:00:00", "2026-02-20 10:00:00"),
            (unknown, "old", "1.2.3.4", "ami-0123456789abcdef0", "t3.micro", "running", None, None, "awscli",
             "2026-02-20 10:00:00", "2026-02-20 10:00:00")])
    server = ApiServer(tmp_path, emulator.url, RECONCILE_INTERVAL_SECONDS="3600", CONSISTENCY_GRACE_SECONDS="0",
                       GONE_AFTER_MISSED_SWEEPS="1")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as api:
            for _ in range(2):
                result = api.post("/instances/sync")  # the sweep at start-up adopted them already
                assert result.status_code == 200, result.text
            listed = {i["id"]: i for i in api.get("/instances").json()["instances"]}
            assert set(listed) == {nameless, fine, legacy, unknown}
            # A row kept before regions were is claimed by the EC2 that lists it, with its real state;
            # one this EC2 does not list keeps its last known state: its absence here proves nothing.
            assert (listed[legacy]["state"], listed[legacy]["region"]) == ("running", "us-east-1")
            assert (listed[unknown]["state"], listed[unknown]["region"]) == ("running", None)
            assert api.get(f"/instances/{nameless}").json()["name"] == nameless  # no Name tag: named by its id
            assert api.get(f"/instances/{fine}").json()["name"] == "fine"
            assert api.get(f"/instances/{poison}").status_code == 404
            assert f"could not record instance {poison}" in server.server_log()
    finally:
        server.stop()


def test_old_events_and_finished_launches_are_pruned_but_never_an_instance(module_server):
    # The module's server starts on the history seed_old_history() wrote (a server of its own cost a start and its
    # start-up sweep): it prunes once its first sweep is done.
    conn = sqlite3.connect(module_server.db_path, isolation_level=None)
    try:
        def pruned() -> bool:
            left = conn.execute("SELECT count(*) FROM instance_events WHERE instance_id = ?", (OLD,))
            return left.fetchone()[0] == 2
        wait_until(pruned, timeout=30)
        with httpx.Client(base_url=module_server.url, timeout=60) as api:
            events = api.get(f"/instances/{OLD}/events").json()["events"]
            assert [e["action"] for e in events] == ["observe", "delete"]
            assert api.get(f"/instances/{OLD}").json()["name"] == "old"
        left = [r[0] for r in conn.execute("SELECT request_id FROM launches ORDER BY request_id")]
        assert left == ["old-pending"]  # an unresolved launch is never forgotten
    finally:
        conn.close()


def test_a_database_from_a_newer_version_is_refused_untouched(tmp_path):
    path = tmp_path / "instances.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE instances (id TEXT PRIMARY KEY)")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    env = safe_env(DATABASE_URL=str(path), EC2_ENDPOINT_URL="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"schema version {SCHEMA_VERSION + 1}" in done.stderr and "upgrade" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["instances"]


def test_a_store_failure_after_ec2_launched_is_503_with_the_id_and_recorded_later(shared, emulator):
    # run-instances succeeds, then something holds the database's write lock for longer than the
    # server's busy timeout (10 s): recording the launch fails.
    mark = len(launches(shared))
    shared.set_faults({"op": "run-instances", "times": 1,
                       "lock_db": {"path": str(shared.db_path), "seconds": 13}})
    with httpx.Client(base_url=shared.url, timeout=90) as api:
        response = api.post("/instances", json=BODY | {"name": "unrecorded"}, headers={"Idempotency-Key": "k-503"})
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["code"] == "record_failed" and body["instance_id"] in body["detail"]
        assert int(response.headers["Retry-After"]) > 0
        instance_id = body["instance_id"]
        assert named(emulator, "unrecorded") == [instance_id]

        wait_until(lambda: api.get(f"/instances/{instance_id}").status_code == 200, timeout=40, interval=0.5)
        row = api.get(f"/instances/{instance_id}").json()
        assert row["name"] == "unrecorded" and row["state"] == "running"
        replay = api.post("/instances", json=BODY | {"name": "unrecorded"}, headers={"Idempotency-Key": "k-503"})
        assert replay.status_code == 201 and replay.json()["id"] == instance_id
    assert named(emulator, "unrecorded") == [instance_id]
    assert len(launches(shared)) == mark + 1


def test_a_launch_whose_outcome_is_unknown_stays_pending_and_resolves_to_its_instance(shared, emulator):
    # EC2 launches, then the answer is an InternalError: the instance exists, the caller cannot know.
    mark = len(launches(shared))
    shared.set_faults({"op": "run-instances", "times": 1, "fail_after": aws_error(
        "InternalError", "RunInstances", "An internal error has occurred.")})
    with httpx.Client(base_url=shared.url, timeout=60) as api:
        response = api.post("/instances", json=BODY | {"name": "unknown"}, headers={"Idempotency-Key": "k-500"})
        assert response.status_code == 503, response.text
        assert response.json()["aws_error_code"] == "InternalError"

        def replayed() -> httpx.Response | None:
            again = api.post("/instances", json=BODY | {"name": "unknown"}, headers={"Idempotency-Key": "k-500"})
            assert again.status_code == 201 or again.json()["code"] == "launch_in_progress", again.text
            return again if again.status_code == 201 else None

        final = wait_until(replayed, timeout=30, interval=0.5)
        assert final.headers["Idempotent-Replayed"] == "true"
    assert named(emulator, "unknown") == [final.json()["id"]]  # never a second launch
    assert len(launches(shared)) == mark + 1


def test_a_store_failure_after_ec2_stopped_an_instance_says_ec2_acted(shared, emulator):
    # The target is launched in EC2 and adopted by the periodic sweep (no `aws` process of its own; an API create
    # was three): how it came to be tracked is not what this tests.
    [instance_id] = launch_managed(emulator, name="to-stop")
    with httpx.Client(base_url=shared.url, timeout=90) as api:
        wait_until(lambda: api.get(f"/instances/{instance_id}").json().get("state") == "running", timeout=30)
        shared.set_faults({"op": "stop-instances", "times": 1,
                           "lock_db": {"path": str(shared.db_path), "seconds": 13}})
        response = api.post(f"/instances/{instance_id}/stop")
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "record_failed" and "accepted the stop" in response.json()["detail"]
        assert emulator.instances()[instance_id]["State"]["Name"] == "stopped"
        wait_until(lambda: api.get(f"/instances/{instance_id}").json()["state"] == "stopped", timeout=40,
                   interval=0.5)


def test_kill_9_mid_create_then_a_retry_with_the_same_key_never_launches_twice(server, emulator):
    mark = len(launches(server))
    # EC2 is slow to answer this launch (one call only: the rule is used up by the call it delays).
    server.set_faults({"op": "run-instances", "delay": 15, "times": 1})
    thread = post_in_background(server, "crash-once", "crash-once")
    wait_until(lambda: len(launches(server)) == mark + 1, timeout=30, interval=0.05)
    orphans = descendants(server.proc.pid)
    os.kill(server.proc.pid, signal.SIGKILL)  # the `aws` process lives on in its own session
    thread.join()
    server.stop()
    server.start()

    with httpx.Client(base_url=server.url, timeout=60) as api:
        retry = api.post("/instances", json=BODY | {"name": "crash-once"}, headers={"Idempotency-Key": "crash-once"})
        assert retry.status_code == 409, retry.text  # the first launch is not resolved yet
        assert retry.json()["code"] == "launch_in_progress" and int(retry.headers["Retry-After"]) > 0

        def replayed() -> httpx.Response | None:
            again = api.post("/instances", json=BODY | {"name": "crash-once"},
                             headers={"Idempotency-Key": "crash-once"})
            return again if again.status_code == 201 else None

        final = wait_until(replayed, timeout=30, interval=0.5)
        assert final.headers["Idempotent-Replayed"] == "true"
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in orphans), timeout=30)
        assert named(emulator, "crash-once") == [final.json()["id"]]  # exactly one instance
        assert len(launches(server)) == mark + 1  # and no second run-instances
        events = api.get(f"/instances/{final.json()['id']}/events").json()["events"]
        assert [e["action"] for e in events] == ["adopt"]


def test_a_launch_that_never_reached_ec2_is_failed_only_when_certain_then_resent_exactly(server, emulator):
    mark = len(launches(server))
    server.set_faults({"op": "run-instances", "delay": 30})
    thread = post_in_background(server, "lost-launch", "lost")
    wait_until(lambda: len(launches(server)) == mark + 1, timeout=30, interval=0.05)
    victims = [server.proc.pid, *descendants(server.proc.pid)]  # the server and its `aws` process
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    thread.join()
    server.stop()
    server.set_faults()
    server.env |= {"AWS_CLI_TIMEOUT_SECONDS": "5", "CONSISTENCY_GRACE_SECONDS": "3"}
    server.start()

    with httpx.Client(base_url=server.url, timeout=60) as api:
        early = api.post("/instances", json=BODY | {"name": "lost"}, headers={"Idempotency-Key": "lost-launch"})
        assert early.status_code == 409 and early.json()["code"] == "launch_in_progress"

        def resent() -> httpx.Response | None:
            again = api.post("/instances", json=BODY | {"name": "lost"}, headers={"Idempotency-Key": "lost-launch"})
            return again if again.status_code == 201 else None

        final = wait_until(resent, timeout=40, interval=0.5)
    first, second = launches(server)[mark:]
    assert second[second.index("--client-token") + 1] == first[first.index("--client-token") + 1] == "lost-launch"
    assert request_tag(second) == request_tag(first)  # the exact request again: EC2's dedupe holds
    assert named(emulator, "lost") == [final.json()["id"]]
