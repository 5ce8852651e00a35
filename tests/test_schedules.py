"""Schedules through the real server, scripts, `aws` and moto, on the service's controllable clock (CLOCK_START):
one Monday of an office, in order. The tests of this module are one scenario and run in the order written (they
share the module's server and emulator; each says what it leaves behind):

- before 09:00: what instances show (a schedule picked up from a console tag, an unknown one), the preview;
- 09:00: the scheduled starts go out as one `start-instances`, a start the budget refuses is recorded and notified;
- attaching by PATCH writes the EC2 tag; a snooze pushes the stop without an `aws` process; a schedule in use stays;
- kill -9, and a restart at 17:30: the stop due at 17:00 is done at start, a snoozed one waits, a period that
  began while the server was down is started, one that began and ended meanwhile is not.

No test waits for a real minute: the server starts at 08:59:00 (its clock), so 09:00 comes within a minute, while
the setup runs, and the restart jumps the clock to 17:30. The instances are launched straight in the emulator and
adopted (how they were created is not the subject), with their Schedule tag set as the console would.
"""

import json
import os
import signal
from datetime import datetime, timedelta

import httpx
import pytest

from app.config import DEFAULT_PRICES_FILE
from tests.support.processes import TLS, wait_until
from tests.support.receivers import WebhookReceiver
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer

MONDAY = "2026-12-07"
OFFICE = {"name": "office", "timezone": "UTC", "periods": [{"days": "mon-fri", "start": "09:00", "stop": "17:00"}]}
EVENING = {"name": "evening", "timezone": "UTC", "periods": [{"days": "mon-fri", "start": "17:15", "stop": "23:00"}]}
MORNING = {"name": "morning", "timezone": "UTC", "periods": [{"days": "mon-fri", "start": "10:00", "stop": "11:00"}]}
BOX = {"name": "created-on-a-schedule", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "ssh_from": "none"}
EXPENSIVE = "t4g.micro"  # priced at USD 40 an hour here: its 8-hour day does not fit BUDGET_USD


def at(hhmm: str, day: str = MONDAY) -> str:
    return f"{day}T{hhmm}:00.000000Z"


@pytest.fixture(scope="module")
def office(emulator, tmp_path_factory):
    """The module's server, its clock at Monday 08:59:00, with the schedules and six instances:
    a (office, stopped), b (office, stopped, an expensive type), c (Schedule=ghost, stopped), d (running, no
    schedule), e (evening, stopped), f (morning, stopped)."""
    tmp = tmp_path_factory.mktemp("schedules")
    prices = json.loads(DEFAULT_PRICES_FILE.read_text())
    prices["regions"]["us-east-1"]["instance_hourly"][EXPENSIVE] = 40.0
    (tmp / "prices.json").write_text(json.dumps(prices))
    hook = WebhookReceiver().start()
    emulator.reset()
    # The boxes are launched, and five of them stopped, before the server starts: its start-up sweep adopts them as
    # they are. (Stopped after, a sweep could adopt the expensive box running, and the budget guard would then stop
    # boxes this scenario needs running.)
    names = {}
    for key, tags, instance_type in (("a", {"Schedule": "office"}, "t3.micro"),
                                     ("b", {"Schedule": "office"}, EXPENSIVE),
                                     ("c", {"Schedule": "ghost"}, "t3.micro"), ("d", {}, "t3.micro"),
                                     ("e", {"Schedule": "evening"}, "t3.micro"),
                                     ("f", {"Schedule": "morning"}, "t3.micro")):
        names[key] = launch_managed(emulator, name=f"box-{key}", tags=tags, instance_type=instance_type)[0]
    stopped = [names[k] for k in "abcef"]
    emulator.ec2.stop_instances(InstanceIds=stopped)
    # A minute before nine on the server's clock: the setup below (a server start, its sweep, the schedules) must be
    # done before nine o'clock, on a loaded two-core machine too.
    server = ApiServer(tmp, emulator.url, CLOCK_START=f"{MONDAY}T08:59:00Z", SCHEDULE_TICK_SECONDS="1",
                       PRICES_FILE=str(tmp / "prices.json"), BUDGET_USD="100", NOTIFY_URLS=hook.url(),
                       NOTIFY_EVENTS="schedule_start_refused,schedule_start,schedule_stop")
    client = httpx.Client(base_url=server.url, timeout=60, verify=TLS)
    try:  # a setup that fails must not leave the server running
        adopt(client, {i: "stopped" if i in stopped else "running" for i in names.values()})
        for schedule in (OFFICE, EVENING, MORNING):
            assert client.post("/schedules", json=schedule).status_code == 201
        yield server, client, names, hook
    finally:
        client.close()
        server.stop()
        hook.stop()


def instance(client: httpx.Client, instance_id: str) -> dict:
    return client.get(f"/instances/{instance_id}").json()


def events(client: httpx.Client, instance_id: str) -> list[dict]:
    return client.get(f"/instances/{instance_id}/events").json()["events"]


def starts_of(server: ApiServer, mark: int = 0) -> list[list[str]]:
    return [c for c in server.aws_calls()[mark:] if "start-instances" in c]


def test_before_nine_each_instance_shows_its_schedule_and_next_start_and_the_preview_prices_the_day(office):
    server, client, ids, _ = office
    wait_until(lambda: instance(client, ids["c"])["schedule_error"] is not None
               and instance(client, ids["a"])["next_action"] is not None, timeout=20)
    a = instance(client, ids["a"])
    assert a["schedule"] == "office" and a["schedule_error"] is None  # picked up from the console's tag
    assert a["next_action"] == {"action": "start", "at": at("09:00"), "source": "schedule"}
    c = instance(client, ids["c"])
    assert c["schedule"] == "ghost" and "'ghost'" in c["schedule_error"] and c["next_action"] is None
    listed = {i["id"]: i for i in client.get("/instances").json()["instances"]}
    assert listed[ids["a"]]["next_action"] == a["next_action"]  # the cached list says the same
    assert listed[ids["d"]]["next_action"]["source"] == "auto_stop"  # an adopted box: its default auto-stop
    preview = client.get("/schedules/office/preview", params={"days": 1}).json()
    assert [(p["at"], p["action"]) for p in preview["actions"]] == [(at("09:00"), "start"), (at("17:00"), "stop")]
    assert sorted(preview["actions"][0]["instance_ids"]) == sorted([ids["a"], ids["b"]])
    assert preview["running_hours"] == 8.0
    hourly = json.loads(DEFAULT_PRICES_FILE.read_text())["regions"]["us-east-1"]
    ipv4 = hourly["public_ipv4_hourly"]
    expected = 16 * ((hourly["instance_hourly"]["t3.micro"] + ipv4) + (40.0 + ipv4))  # 24 h less 8, each box
    assert preview["estimated_savings_usd"] == pytest.approx(expected, abs=1e-3)
    assert client.get("/schedules/office/preview", params={"days": 32}).status_code == 422


def test_at_nine_the_due_starts_go_out_as_one_call_and_a_start_over_budget_is_refused_and_told(office, emulator):
    server, client, ids, hook = office
    recorded = lambda key, action: any(e["action"] == action for e in events(client, ids[key]))  # noqa: E731
    wait_until(lambda: recorded("a", "schedule_start") and recorded("b", "schedule_start_refused"), timeout=90,
               interval=0.5)
    assert emulator.instances()[ids["a"]]["State"]["Name"] == "running"
    starts = starts_of(server)
    assert len(starts) == 1 and ids["a"] in starts[0] and ids["b"] not in starts[0]
    started = next(e for e in events(client, ids["a"]) if e["action"] == "schedule_start")
    assert started["source"] == "schedule" and started["to_state"] in ("pending", "running")
    wait_until(lambda: instance(client, ids["a"])["state"] == "running", timeout=10)
    assert instance(client, ids["a"])["next_action"] == {"action": "stop", "at": at("17:00"), "source": "schedule"}
    refused = next(e for e in events(client, ids["b"]) if e["action"] == "schedule_start_refused")
    assert refused["source"] == "schedule" and refused["detail"].startswith("budget_exceeded:")
    assert emulator.instances()[ids["b"]]["State"]["Name"] == "stopped"
    assert instance(client, ids["c"])["state"] == "stopped"  # an unknown schedule does nothing
    wait_until(lambda: any("NOT started by its schedule" in t for t in hook.titles()), timeout=20)
    told = next(p for p in hook.posts if "NOT started by its schedule" in p.get("title", ""))
    assert ids["b"] in told["title"] and "budget_exceeded" in told["message"]


def test_attaching_on_create_or_by_patch_writes_the_tag_and_plans_the_schedules_stop(office, emulator):
    """And an unknown name is a 422 before any `aws` process. (A create here: its subject is what a create with a
    schedule launches; no SSH rule, which costs a process and is not the subject.)"""
    server, client, ids, _ = office
    mark = len(server.aws_calls())
    assert client.patch(f"/instances/{ids['d']}", json={"schedule": "nope"}).json()["code"] == "unknown_schedule"
    refused = client.post("/instances", json=BOX | {"schedule": "nope"})
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_schedule"
    assert server.mutations_since(mark) == []
    made = client.post("/instances", json=BOX | {"schedule": "office"})
    assert made.status_code == 201, made.text
    box = made.json()
    ids["box"] = box["id"]
    assert box["schedule"] == "office"
    assert box["next_action"] == {"action": "stop", "at": at("17:00"), "source": "schedule"}
    launched = [c for c in server.aws_calls()[mark:] if "run-instances" in c]
    assert len(launched) == 1 and "Schedule" in json.dumps(launched[0]) and "office" in json.dumps(launched[0])
    assert {t["Key"]: t["Value"] for t in emulator.instances()[box["id"]]["Tags"]}["Schedule"] == "office"
    d = client.patch(f"/instances/{ids['d']}", json={"schedule": "office"}).json()
    # Inside office hours the default auto-stop (480 min from its adoption, before nine) gives way to 17:00.
    assert d["schedule"] == "office" and d["next_action"] == {"action": "stop", "at": at("17:00"), "source": "schedule"}
    tags = {t["Key"]: t["Value"] for t in emulator.instances()[ids["d"]]["Tags"]}
    assert tags["Schedule"] == "office" and d["tags"]["Schedule"] == "office"
    c = client.patch(f"/instances/{ids['c']}", json={"schedule": None}).json()
    assert c["schedule"] is None and c["schedule_error"] is None
    assert "Schedule" not in {t["Key"] for t in emulator.instances()[ids["c"]]["Tags"]}


def test_a_snooze_pushes_the_next_stop_without_an_aws_process_and_is_an_event(office):
    server, client, ids, _ = office
    mark = len(server.aws_calls())
    snoozed = client.post(f"/instances/{ids['a']}/snooze", json={"minutes": 60})
    assert snoozed.status_code == 200, snoozed.text
    assert snoozed.json()["next_action"] == {"action": "stop", "at": at("18:00"), "source": "schedule"}
    assert server.mutations_since(mark) == []
    event = events(client, ids["a"])[-1]
    assert event["action"] == "snoozed" and event["source"] == "schedule" and at("18:00") in event["detail"]
    stopped = client.post(f"/instances/{ids['b']}/snooze", json={"minutes": 60})
    assert stopped.status_code == 409 and stopped.json()["code"] == "wrong_state"
    for body in ({"minutes": 5}, {"minutes": 60, "until": f"{MONDAY}T20:00:00Z"}, {}, {"hours": 1},
                 {"minutes": 60, "until": None}, {"minutes": None}):
        assert client.post(f"/instances/{ids['a']}/snooze", json=body).status_code == 422, body
    in_use = client.delete("/schedules/office")
    assert in_use.status_code == 409 and in_use.json()["code"] == "schedule_in_use"
    assert set(in_use.json()["instance_ids"]) == {ids["a"], ids["b"], ids["d"], ids["box"]}


def test_kill_9_then_a_restart_at_half_past_five_does_the_due_stop_keeps_the_snooze_and_catches_up(office, emulator):
    """The stop of d (17:00) fell due while the server was down: done at start. a's was snoozed to 18:00: kept.
    e's period began at 17:15 while it was down and still runs: started. f's (10:00-11:00) is over: not started."""
    server, client, ids, _ = office
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait()
    server.log.close()
    server.env["CLOCK_START"] = f"{MONDAY}T17:30:00Z"
    server.start()
    state = lambda key: emulator.instances()[ids[key]]["State"]["Name"]  # noqa: E731
    wait_until(lambda: state("d") == "stopped" and state("e") == "running", timeout=30, interval=0.5)
    recorded = lambda key, action: [e for e in events(client, ids[key]) if e["action"] == action]  # noqa: E731
    wait_until(lambda: recorded("d", "schedule_stop") and recorded("e", "schedule_start"), timeout=10)
    stop = recorded("d", "schedule_stop")[0]
    assert stop["source"] == "schedule" and stop["at"] >= at("17:30")
    assert recorded("e", "schedule_start")[0]["source"] == "schedule"
    assert state("a") == "running" and instance(client, ids["a"])["next_action"]["at"] == at("18:00")
    assert state("f") == "stopped" and not any(e["action"] == "schedule_start" for e in events(client, ids["f"]))
    f = instance(client, ids["f"])
    assert f["next_action"] == {"action": "start", "at": at("10:00", "2026-12-08"), "source": "schedule"}
    assert datetime.fromisoformat(f["next_action"]["at"].replace("Z", "+00:00")) - timedelta(hours=16, minutes=30) \
        == datetime.fromisoformat(at("17:30").replace("Z", "+00:00"))
