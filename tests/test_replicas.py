"""Two real API servers on one real PostgreSQL database behave as one service (issue 16, part 2).

Each server has its own AWS_CLI shim log, so every `aws` process is counted per replica.
"""

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import TLS, wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer
from tests.test_budget_guard import one_create

# No SSH rule (ssh_from none): SSH is not what these tests are about, and the rule costs an `aws` process.
BODY = {"name": "shared", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "ssh_from": "none"}
# The leader's sweep interval: each sweep is an `aws` process, and the shared pair's leader sweeps for as long as its
# tests run; every wait and bound below is in intervals (the sweep count sleeps five).
INTERVAL = 3.0
# One client for the module's requests outside its threads: httpx.get() and friends make a client per call, and each
# loads the CA bundle (~20 ms of CPU in this process; TLS is the harness's context, built once); the polls below make
# hundreds. No keep-alive: the servers it talks to are killed and restarted on the same port, and a connection kept
# from before would be a dead one.
HTTP = httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0), verify=TLS)


def leader_flag(server: ApiServer) -> int:
    text = HTTP.get(f"{server.url}/metrics", timeout=10).text
    return next(int(s.value) for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "ec2cl_leader")


def calls(server: ApiServer, operation: str, since: int = 0) -> int:
    """How many `aws` processes of `operation` the server spawned after its first `since`."""
    return sum(1 for argv in server.aws_calls()[since:] if operation in argv)


def marks(servers: list[ApiServer]) -> list[int]:
    return [len(s.aws_calls()) for s in servers]


def adopted_on(server: ApiServer, instance_id: str) -> None:
    """Sync on `server` until its record holds the instance running (tests/support/seeding.py; the leader's own
    sweeps may adopt it first): what the replicas do to an instance is the subject, not creating it."""
    with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as client:
        adopt(client, [instance_id], interval=0.1)


def start_pair(emulator, pg_cluster, pg_catalog_template, tmp: Path, **env: str) -> Iterator[list[ApiServer]]:
    """Two replicas on one database, each sweeping every INTERVAL seconds (when it leads), with settings `env`."""
    url = pg_cluster.new_database(pg_catalog_template)
    servers = []
    try:
        for name in ("a", "b"):
            (tmp / name).mkdir()
            servers.append(ApiServer(tmp / name, emulator.url, DATABASE_URL=url,
                                     RECONCILE_INTERVAL_SECONDS=str(INTERVAL), CONSISTENCY_GRACE_SECONDS="0",
                                     **env))
        wait_until(lambda: sum(leader_flag(s) for s in servers) == 1, timeout=20)
        yield servers
    finally:
        for server in sorted(servers, key=leads):  # the follower first: else it takes over, and sweeps, as it stops
            server.stop()


def leads(server: ApiServer) -> int:
    try:
        return leader_flag(server)
    except httpx.HTTPError:  # killed (or never up)
        return 0


# Room for two and a half default creates (one_create: the server's own prices and projection, a few seconds
# earlier): the first create and one of the two at once fit, not both.
ROOM = 2.5


@pytest.fixture
def budget_pair(emulator, fresh_emulator, pg_cluster, pg_catalog_template, tmp_path):
    """A pair of its own started with a budget of ROOM creates (a restart of both, to set it, cost two server
    starts and their start-up sweeps more)."""
    yield from start_pair(emulator, pg_cluster, pg_catalog_template, tmp_path,
                          BUDGET_USD=f"{ROOM * one_create(datetime.now(UTC)):.6f}")


@pytest.fixture(scope="module")
def running_pair(emulator, pg_cluster, pg_catalog_template, tmp_path_factory):
    """The pair the tests that leave both replicas running share (the module's last tests: it stops at the
    module's end). A pair's start is two servers, a database and an election, each server's start-up sweep.
    EC2 is reset before it starts (a reset after its start made the earlier tests' instances, which it had adopted,
    vanish: its leader looked each up and deleted its group, six `aws` processes, some during the sweep count)."""
    emulator.reset()
    yield from start_pair(emulator, pg_cluster, pg_catalog_template, tmp_path_factory.mktemp("pair"))


@pytest.fixture
def shared_pair(running_pair):
    """The shared pair, with one leader and no faults. EC2 holds what the earlier tests on it made (each looks at
    its own instances, by id or by a name no other uses; the first to create one asks for a fresh emulator, which
    holds nothing then). Counts are taken from marks()."""
    for server in running_pair:
        server.set_faults()
    assert sum(leader_flag(s) for s in running_pair) == 1
    yield running_pair
    for server in running_pair:
        server.set_faults()


def test_two_creates_on_two_replicas_share_one_budget(budget_pair):
    pair = budget_pair
    a, b = pair
    first = HTTP.post(f"{a.url}/instances", json=BODY | {"name": "first"}, timeout=60)
    assert first.status_code == 201, first.text
    budget = HTTP.get(f"{b.url}/budget", timeout=30).json()  # one instance's projection, seen by the other
    assert budget["committed_usd"] > 0
    assert 2 * budget["committed_usd"] < budget["budget_usd"] < 3 * budget["committed_usd"]  # room for one more
    for server in pair:
        server.set_faults({"op": "run-instances", "delay": 2})  # both creates are in flight at once
    answers: dict[str, httpx.Response] = {}

    def send(server: ApiServer, name: str) -> None:
        answers[name] = httpx.post(f"{server.url}/instances", json=BODY | {"name": name}, timeout=120)

    threads = [threading.Thread(target=send, args=(s, n)) for s, n in ((a, "on-a"), (b, "on-b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted((r.status_code, r.json().get("code")) for r in answers.values())
    assert codes == [(201, None), (409, "budget_exceeded")], [r.text for r in answers.values()]
    assert sum(calls(s, "run-instances") for s in pair) == 2  # the first instance's, and one of the two


# The tests below share one pair: those that leave both replicas running (the sweep count first, as it was on a
# pair of its own: nothing an earlier test asked for is left to sweep), then the one that kills its leader.
def test_the_two_replicas_together_sweep_about_once_per_interval(shared_pair):
    pair = shared_pair
    before = [calls(s, "describe-instances") for s in pair]
    time.sleep(5 * INTERVAL)
    swept = [calls(s, "describe-instances") - b for s, b in zip(pair, before, strict=True)]
    # 5 intervals: one replica sweeps (each round is a sweep, then an interval's wait: fewer than 5 on a busy
    # machine), the other not at all; two sweepers would make about 10.
    assert 2 <= sum(swept) <= 7, swept
    assert min(swept) == 0, swept


def test_one_key_sent_to_both_replicas_at_once_launches_once(shared_pair, fresh_emulator):
    pair = shared_pair
    before = marks(pair)
    answers: list[httpx.Response] = []

    def send(server: ApiServer) -> None:
        answers.append(httpx.post(f"{server.url}/instances", json=BODY, headers={"Idempotency-Key": "both-at-once"},
                                  timeout=120))

    threads = [threading.Thread(target=send, args=(s,)) for s in pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(calls(s, "run-instances", m) for s, m in zip(pair, before, strict=True)) == 1
    assert len(fresh_emulator.instances(managed_only=True)) == 1
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {201, 409} and codes[0] == 201, [a.text for a in answers]  # a replay answers 201 too
    ids = {a.json()["id"] for a in answers if a.status_code < 300}
    assert len(ids) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["code"] == "launch_in_progress"
    # The retry the 409 asks for gets the instance, from either replica.
    for server in pair:
        again = HTTP.post(f"{server.url}/instances", json=BODY, headers={"Idempotency-Key": "both-at-once"},
                           timeout=60)
        assert again.status_code == 201 and again.json()["id"] in ids


def test_a_create_on_one_replica_is_listed_by_the_other_at_once(shared_pair):
    a, b = shared_pair
    made = HTTP.post(f"{a.url}/instances", json=BODY | {"name": "seen-by-b"}, timeout=60)
    assert made.status_code in (201, 202), made.text
    listed = HTTP.get(f"{b.url}/instances", timeout=10).json()["instances"]
    assert made.json()["id"] in [i["id"] for i in listed]
    assert HTTP.get(f"{b.url}/instances/{made.json()['id']}", timeout=10).json()["name"] == "seen-by-b"
    stopped = HTTP.post(f"{b.url}/instances/{made.json()['id']}/stop", timeout=60)  # B acts on A's instance
    assert stopped.status_code in (200, 202), stopped.text
    assert HTTP.get(f"{a.url}/instances/{made.json()['id']}", timeout=10).json()["state"] in ("stopping", "stopped")


def test_mutations_of_one_instance_wait_for_each_other_across_replicas(shared_pair, emulator):
    a, b = shared_pair
    made = {"id": launch_managed(emulator, name="serial")[0]}
    adopted_on(a, made["id"])
    mark = len(a.aws_calls())
    a.set_faults({"op": "stop-instances", "delay": 3})  # A's stop takes 3 s in EC2
    finished: dict[str, float] = {}

    def stop() -> None:
        assert httpx.post(f"{a.url}/instances/{made['id']}/stop", timeout=60).status_code in (200, 202)
        finished["stop"] = time.monotonic()

    stopper = threading.Thread(target=stop)
    stopper.start()
    wait_until(lambda: calls(a, "stop-instances", mark) == 1, timeout=10, interval=0.05)
    started = HTTP.post(f"{b.url}/instances/{made['id']}/start", timeout=60)
    finished["start"] = time.monotonic()
    stopper.join()
    # B waited for A's stop to be recorded, then judged the state it left (stopping: 409, or stopped: start).
    assert finished["start"] >= finished["stop"]
    assert started.status_code in (200, 202, 409), started.text
    if started.status_code == 409:
        assert started.json()["code"] == "wrong_state"


def test_the_leader_stops_on_time_an_instance_whose_auto_stop_was_set_on_the_other(shared_pair, emulator):
    leader, follower = sorted(shared_pair, key=leader_flag, reverse=True)
    before = marks([leader, follower])
    made = {"id": launch_managed(emulator, name="stop-soon")[0]}
    adopted_on(follower, made["id"])
    at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    assert HTTP.patch(f"{follower.url}/instances/{made['id']}", json={"stop_at": at}, timeout=60).status_code == 200
    # The follower's request cannot wake the leader's scheduler (which sleeps up to a minute); its sweeps do.
    wait_until(lambda: calls(leader, "stop-instances", before[0]) == 1, timeout=3 + 2 * INTERVAL + 1, interval=0.1)
    assert calls(follower, "stop-instances", before[1]) == 0


def test_a_snooze_made_on_the_follower_is_honoured_by_the_leader(shared_pair, emulator):
    """Issue 27: the snooze is in the shared store; the leader's auto-stop, which would have stopped the instance at
    its old stop_at, finds nothing due then (it wakes at that stop_at, and after each sweep)."""
    leader, follower = sorted(shared_pair, key=leader_flag, reverse=True)
    before = marks([leader, follower])
    made = launch_managed(emulator, name="snooze-on-follower")[0]
    adopted_on(follower, made)
    old = datetime.now(UTC) + timedelta(seconds=2)
    assert HTTP.patch(f"{follower.url}/instances/{made}", json={"stop_at": old.isoformat()}).status_code == 200
    snoozed = HTTP.post(f"{follower.url}/instances/{made}/snooze", json={"minutes": 15})
    assert snoozed.status_code == 200, snoozed.text
    pushed = datetime.fromisoformat(snoozed.json()["next_action"]["at"].replace("Z", "+00:00"))
    assert abs((pushed - old - timedelta(minutes=15)).total_seconds()) < 0.01
    time.sleep(2 + INTERVAL + 1)  # past the old stop_at and a sweep of the leader's after it
    assert calls(leader, "stop-instances", before[0]) == 0 and calls(follower, "stop-instances", before[1]) == 0
    assert emulator.instances()[made]["State"]["Name"] == "running"
    seen = HTTP.get(f"{leader.url}/instances/{made}/events").json()["events"]
    assert seen[-1]["action"] == "snoozed" and seen[-1]["source"] == "schedule"


def test_when_the_leader_dies_the_other_adopts_within_two_intervals(shared_pair, emulator):
    """The module's last test: it kills the shared pair's leader (a pair of its own cost two server starts, a
    database and an election). The instance it launches is new to both: the survivor's sweep adopts it."""
    leader, follower = sorted(shared_pair, key=leader_flag, reverse=True)
    assert (leader_flag(leader), leader_flag(follower)) == (1, 0)
    leader.proc.kill()  # kill -9: no shutdown, the lock goes with its connection
    leader.proc.wait()
    killed = time.monotonic()
    [made] = launch_managed(emulator, name="by-hand")

    def adopted() -> bool:
        return HTTP.get(f"{follower.url}/instances/{made}", timeout=5).status_code == 200

    wait_until(adopted, timeout=3 * INTERVAL, interval=0.1)
    took = time.monotonic() - killed
    assert took <= 2 * INTERVAL + 0.5, took  # the half-second: this test's own polling and a slow machine
    assert leader_flag(follower) == 1
