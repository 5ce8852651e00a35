"""Auto-stop through the real server, scripts, `aws` and moto: the scheduler, PATCH, restarts.

Its own module so that pytest-xdist runs it beside the budget tests (they take a minute each)."""

import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.processes import wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer
from tests.test_spend_guard import BODY, calls_of, created, ec2_state

# What these tests stop is due by its stop_at; how it was launched is not their subject: boxes are launched in the
# emulator and adopted by a sweep (each armed for DEFAULT_AUTO_STOP_MINUTES, 480, as a default create is), and the
# two tests whose subject is what a create arms make their group without the SSH rule (ssh_from none). All share one
# server: the one that restarts it on another clock runs last.


@pytest.fixture(scope="module")
def shared_server(emulator, tmp_path_factory):
    """The server the tests share (each started one of its own: a server start and its start-up sweep). EC2 is
    reset once, before it starts; each test then looks only at the instances it launched, by id, and nothing an
    earlier one leaves falls due (stopped, cancelled, or 480 minutes away). Those that restart it restart it."""
    emulator.reset()
    srv = ApiServer(tmp_path_factory.mktemp("auto_stop"), emulator.url)
    yield srv
    srv.stop()


@pytest.fixture
def server(shared_server):
    shared_server.set_faults()
    if shared_server.proc is None or shared_server.proc.poll() is not None:  # a test that stopped it failed
        shared_server.start()
    yield shared_server
    shared_server.set_faults()


def _client(server: ApiServer):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture
def api(server):
    yield from _client(server)


def auto_stopped(api: httpx.Client, instance_id: str) -> bool:
    """The scheduler recorded its stop (it writes once EC2 has answered)."""
    return any(e["source"] == "auto_stop" and e["action"] == "stop"
               for e in api.get(f"/instances/{instance_id}/events").json()["events"])


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_three_due_together_cost_one_stop_instances_process_and_null_cancels(api, server, emulator):
    *items, kept = adopt(api, launch_managed(emulator, 4, name=BODY["name"]))
    at = _soon(4)
    for item in [*items, kept]:
        response = api.patch(f"/instances/{item['id']}", json={"stop_at": at})
        assert response.status_code == 200 and response.json()["stop_at"], response.text
    cancelled = api.patch(f"/instances/{kept['id']}", json={"stop_at": None}).json()
    assert cancelled["stop_at"] is None and cancelled["auto_stop_minutes"] == 480
    mark = len(server.aws_calls())
    ids = {item["id"] for item in items}
    wait_until(lambda: all(ec2_state(emulator, i) == "stopped" for i in ids), timeout=30, interval=0.5)
    time.sleep(1)
    stops = calls_of(server, "stop-instances", mark)
    assert len(stops) == 1 and ids <= set(stops[0]), stops
    assert ec2_state(emulator, kept["id"]) == "running"
    for i in ids:
        wait_until(lambda i=i: auto_stopped(api, i), timeout=10)


def test_patch_rules(api, server, emulator):
    item = created(api, auto_stop_minutes=None, ssh_from="none")
    assert item["stop_at"] is None and item["auto_stop_minutes"] is None
    # The sweep each request asks for records what EC2 did (no sync of its own: one `aws` process fewer each).
    wait_until(lambda: api.get(f"/instances/{item['id']}").json()["state"] == "running")
    rearmed = api.patch(f"/instances/{item['id']}", json={"auto_stop_minutes": 90}).json()
    assert rearmed["auto_stop_minutes"] == 90 and rearmed["stop_at"]
    assert api.patch(f"/instances/{item['id']}", json={"stop_at": "2020-01-01T00:00:00Z"}).json()["code"] == \
        "stop_at_in_past"
    for bad in ({}, {"stop_at": None, "auto_stop_minutes": 5}, {"auto_stop_minutes": 0},
                {"stop_at": "2030-01-01T00:00:00"}, {"other": 1}):
        assert api.patch(f"/instances/{item['id']}", json=bad).status_code == 422, bad
    api.post(f"/instances/{item['id']}/stop")
    wait_until(lambda: api.get(f"/instances/{item['id']}").json()["state"] == "stopped")
    stopped = api.get(f"/instances/{item['id']}").json()
    assert stopped["state"] == "stopped" and stopped["stop_at"] is None
    assert api.patch(f"/instances/{item['id']}", json={"stop_at": _soon(600)}).json()["code"] == "wrong_state"
    started = api.post(f"/instances/{item['id']}/start").json()
    assert started["stop_at"] is not None  # every start re-arms it from auto_stop_minutes
    assert api.patch("/instances/i-00000000000000000", json={"stop_at": None}).status_code == 404


def _stopped_at(emulator, instance_id: str, stop_at: str, within: float) -> None:
    """EC2 shows it stopping or stopped within `within` seconds of its stop_at (not CHECK_SECONDS later)."""
    due = datetime.fromisoformat(stop_at)
    wait_until(lambda: ec2_state(emulator, instance_id) in ("stopping", "stopped"),
               timeout=(due - datetime.now(UTC)).total_seconds() + within, interval=0.25)


def test_one_that_falls_due_while_a_stop_round_is_in_flight_is_stopped_at_once(api, server, emulator):
    """The round stopping the first is slow (EC2 takes 4 s more to answer); the second falls due meanwhile. It
    used to be left alone as if EC2 had refused it: a minute late, unless something woke the loop."""
    first, second = adopt(api, launch_managed(emulator, 2, name=BODY["name"]))
    server.set_faults({"op": "stop-instances", "match": [first["id"]], "delay": 4, "times": 1})
    at = {first["id"]: _soon(3), second["id"]: _soon(5)}
    for instance_id, stop_at in at.items():
        assert api.patch(f"/instances/{instance_id}", json={"stop_at": stop_at}).status_code == 200
    mark = len(server.aws_calls())
    _stopped_at(emulator, first["id"], at[first["id"]], within=4 + 4)
    _stopped_at(emulator, second["id"], at[second["id"]], within=4 + 4)
    stops = calls_of(server, "stop-instances", mark)
    assert [first["id"] in c for c in stops] == [True, False], stops  # two rounds: the second came at once


@pytest.fixture(scope="module")
def restarted(shared_server, emulator):
    """One restart for the two tests below (each restarted the server: a server start and its start-up sweep).
    - `due`: its stop_at falls due while the server is down.
    - `pending`: recorded pending, as a crash may leave it, with a stop_at already past.
    Returns both records, the state EC2 showed for `due` after it was due with the server down, and when the
    server started again (each test's wait is counted from then, as when it restarted the server itself)."""
    if shared_server.proc is None or shared_server.proc.poll() is not None:  # a test that stopped it failed
        shared_server.start()
    with httpx.Client(base_url=shared_server.url, timeout=60) as api:
        due, pending = adopt(api, launch_managed(emulator, 2, name=BODY["name"]))
        assert api.patch(f"/instances/{due['id']}", json={"stop_at": _soon(3)}).status_code == 200
    shared_server.stop()
    with closing(sqlite3.connect(shared_server.db_path)) as conn, conn:  # as a crash may leave it: still pending
        conn.execute("UPDATE instances SET state = 'pending', stop_at = ? WHERE id = ?",
                     ((datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), pending["id"]))
    time.sleep(4)
    due_while_down = ec2_state(emulator, due["id"])
    shared_server.start()
    return {"due": due, "pending": pending, "due_while_down": due_while_down, "started": time.monotonic()}


def _left(restarted: dict, timeout: float) -> float:
    """What is left of `timeout` seconds counted from the restart."""
    return max(0.0, restarted["started"] + timeout - time.monotonic())


def test_what_fell_due_while_the_server_was_down_is_stopped_after_startup(api, restarted, emulator):
    item = restarted["due"]
    assert restarted["due_while_down"] == "running"  # nobody stopped it while the server was down
    wait_until(lambda: ec2_state(emulator, item["id"]) == "stopped", timeout=_left(restarted, 20), interval=0.5)
    wait_until(lambda: auto_stopped(api, item["id"]), timeout=10)


def test_one_recorded_pending_at_a_restart_is_stopped_when_the_sweep_records_it_running(api, restarted, emulator):
    """EC2 cannot stop a pending instance, so the first round after a start passes it by; the sweep that
    records it running wakes the auto-stopper (it used to sleep a minute)."""
    item = restarted["pending"]
    wait_until(lambda: ec2_state(emulator, item["id"]) in ("stopping", "stopped"), timeout=_left(restarted, 15),
               interval=0.25)
    wait_until(lambda: auto_stopped(api, item["id"]), timeout=10)


def test_a_one_minute_auto_stop_stops_it_in_ec2_with_an_auto_stop_event(api, server, emulator):
    """The minute is the service's clock's: after the create the server restarts with CLOCK_START five seconds
    before the stop_at it armed, so the minute is up five seconds later instead of sixty (the restart itself is
    tested on its own above). The stop is judged on the server's clock: its event is not before stop_at. On the
    module's server (it had one of its own: a server start, its start-up sweep and a reset), and last: the server
    runs on a clock about a minute ahead after it (nothing an earlier test left falls due in that minute)."""
    item = created(api, auto_stop_minutes=1, ssh_from="none")
    assert item["auto_stop_minutes"] == 1
    stop_at = _utc(item["stop_at"])
    assert timedelta(seconds=50) < stop_at - datetime.now(UTC) <= timedelta(minutes=1)
    server.stop()
    assert ec2_state(emulator, item["id"]) == "running"
    server.env["CLOCK_START"] = (stop_at - timedelta(seconds=5)).isoformat()
    server.start()
    wait_until(lambda: ec2_state(emulator, item["id"]) == "stopped", timeout=60 + 15, interval=0.5)
    wait_until(lambda: auto_stopped(api, item["id"]), timeout=10)
    event = next(e for e in api.get(f"/instances/{item['id']}/events").json()["events"]
                 if e["source"] == "auto_stop" and e["action"] == "stop")
    assert _utc(event["at"]) >= stop_at  # not before its minute was up
    assert api.get(f"/instances/{item['id']}").json()["stop_at"] is None
