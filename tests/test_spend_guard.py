"""The spend guard through the real server, scripts, `aws` and moto: launch flags, the budget, auto-stop."""

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.processes import wait_until
from tests.support.server import ApiServer

BODY = {"name": "guarded", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}


@pytest.fixture
def server(emulator, fresh_emulator, tmp_path):
    srv = ApiServer(tmp_path, emulator.url)
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def created(api: httpx.Client, **overrides) -> dict:
    response = api.post("/instances", json=BODY | overrides)
    assert response.status_code == 201, response.text
    return response.json()


def calls_of(server: ApiServer, operation: str, mark: int = 0) -> list[list[str]]:
    return [c for c in server.aws_calls()[mark:] if operation in c]


def auto_stopped(api: httpx.Client, instance_id: str) -> bool:
    """The scheduler recorded its stop (it writes once EC2 has answered)."""
    return any(e["source"] == "auto_stop" and e["action"] == "stop"
               for e in api.get(f"/instances/{instance_id}/events").json()["events"])


def ec2_state(emulator, instance_id: str) -> str:
    return emulator.instances()[instance_id]["State"]["Name"]


def restart(server: ApiServer, **env: str) -> None:
    server.stop()
    server.env |= env
    server.start()


def test_t_instances_launch_on_standard_credits_and_without_a_public_ip_when_asked(api, server, fresh_emulator):
    plain = created(api, name="with-ip")
    private = created(api, name="no-ip", associate_public_ip=False)
    launches = calls_of(server, "run-instances")
    assert len(launches) == 2
    for argv in launches:
        spec = json.loads(argv[argv.index("--credit-specification") + 1])
        assert spec == {"CpuCredits": "standard"}
    assert "--no-associate-public-ip-address" not in launches[0]
    assert "--no-associate-public-ip-address" in launches[1]
    assert fresh_emulator.instances()[plain["id"]].get("PublicIpAddress")
    assert not fresh_emulator.instances()[private["id"]].get("PublicIpAddress")
    api.post("/instances/sync").raise_for_status()
    record = api.get(f"/instances/{private['id']}").json()
    assert record["public_ip"] is None and "no public IPv4 address" in record["ssh_string"]
    assert api.get(f"/instances/{plain['id']}").json()["ssh_string"].startswith("ssh -i ")


def test_over_budget_creates_and_starts_are_refused_without_a_process_stop_and_delete_pass(api, server,
                                                                                           fresh_emulator):
    first, second = created(api, name="one"), created(api, name="two")
    two = api.get("/budget").json()["committed_usd"]  # the server's own projection of two instances
    assert two > 0
    restart(server, BUDGET_USD=f"{two * 1.25:.6f}")  # room for two, not three

    mark = len(server.aws_calls())
    refused = api.post("/instances", json=BODY | {"name": "three"})
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["code"] == "budget_exceeded"
    assert "BUDGET_USD" in body["detail"] and "auto_stop_minutes" in body["detail"]
    assert server.aws_calls()[mark:] == []  # not even the catalogue: nothing spawned
    assert {i for i, d in fresh_emulator.instances().items() if d["State"]["Name"] != "terminated"} == \
        {first["id"], second["id"]}

    assert api.post(f"/instances/{first['id']}/stop").status_code == 202  # lowering cost is never refused
    api.post("/instances/sync").raise_for_status()
    assert api.get(f"/instances/{first['id']}").json()["state"] == "stopped"
    committed = api.get("/budget").json()["committed_usd"]
    restart(server, BUDGET_USD=f"{committed * 1.001:.6f}")  # a start no longer fits
    mark = len(server.aws_calls())
    start = api.post(f"/instances/{first['id']}/start")
    assert start.status_code == 409 and start.json()["code"] == "budget_exceeded"
    assert calls_of(server, "start-instances", mark) == []
    assert ec2_state(fresh_emulator, first["id"]) == "stopped"
    assert api.post(f"/instances/{second['id']}/stop").status_code == 202
    assert api.delete(f"/instances/{first['id']}").status_code == 202


def test_budget_shows_the_period_every_instance_and_a_missing_price_is_a_400(api, server, fresh_emulator):
    item = created(api, auto_stop_minutes=30)
    budget = api.get("/budget").json()
    assert budget["budget_usd"] == 100000 and budget["period_start"].endswith("01T00:00:00.000000Z")
    assert budget["remaining_usd"] == pytest.approx(budget["budget_usd"] - budget["committed_usd"], abs=1e-3)
    [entry] = budget["instances"]
    assert entry["id"] == item["id"] and entry["stop_at"] == item["stop_at"]
    # 30 minutes of t3.micro and IPv4 at least; storage to the month's end on top
    assert entry["projected_usd"] >= 0.5 * (0.0104 + 0.005) * 0.99
    assert budget["aws_plan"] is None and "emulator" in budget["aws_plan_note"]
    cost = api.get(f"/instances/{item['id']}").json()["cost"]
    assert cost["projected_usd"] == pytest.approx(entry["projected_usd"], rel=0.01)

    restart(server, ALLOWED_INSTANCE_TYPES="t3.micro,t4g.micro,t3.small",
            PRICES_FILE=str(_prices_without(server, "t3.small")))
    mark = len(server.aws_calls())
    response = api.post("/instances", json=BODY | {"instance_type": "t3.small"})
    assert response.status_code == 400 and response.json()["code"] == "price_unknown"
    assert "PRICES_FILE" in response.json()["detail"] and server.aws_calls()[mark:] == []


def _prices_without(server: ApiServer, instance_type: str):
    from app.config import DEFAULT_PRICES_FILE

    doc = json.loads(DEFAULT_PRICES_FILE.read_text())
    for region in doc["regions"].values():
        region["instance_hourly"].pop(instance_type, None)
    path = server.tmp / "prices.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_one_minute_auto_stop_stops_it_in_ec2_with_an_auto_stop_event(api, server, fresh_emulator):
    item = created(api, auto_stop_minutes=1)
    assert item["auto_stop_minutes"] == 1
    stop_at = datetime.fromisoformat(item["stop_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=50) < stop_at - datetime.now(UTC) <= timedelta(minutes=1)
    wait_until(lambda: ec2_state(fresh_emulator, item["id"]) == "stopped", timeout=60 + 15, interval=1)
    assert datetime.now(UTC) >= stop_at
    wait_until(lambda: auto_stopped(api, item["id"]), timeout=10)
    assert api.get(f"/instances/{item['id']}").json()["stop_at"] is None


def _soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def test_three_due_together_cost_one_stop_instances_process_and_null_cancels(api, server, fresh_emulator):
    items = [created(api, name=f"due-{i}") for i in range(3)]
    kept = created(api, name="kept")
    api.post("/instances/sync").raise_for_status()
    at = _soon(4)
    for item in [*items, kept]:
        response = api.patch(f"/instances/{item['id']}", json={"stop_at": at})
        assert response.status_code == 200 and response.json()["stop_at"], response.text
    cancelled = api.patch(f"/instances/{kept['id']}", json={"stop_at": None}).json()
    assert cancelled["stop_at"] is None and cancelled["auto_stop_minutes"] == 480
    mark = len(server.aws_calls())
    ids = {item["id"] for item in items}
    wait_until(lambda: all(ec2_state(fresh_emulator, i) == "stopped" for i in ids), timeout=30, interval=0.5)
    time.sleep(1)
    stops = calls_of(server, "stop-instances", mark)
    assert len(stops) == 1 and ids <= set(stops[0]), stops
    assert ec2_state(fresh_emulator, kept["id"]) == "running"
    for i in ids:
        wait_until(lambda i=i: auto_stopped(api, i), timeout=10)


def test_what_fell_due_while_the_server_was_down_is_stopped_after_startup(api, server, fresh_emulator):
    item = created(api)
    api.post("/instances/sync").raise_for_status()
    assert api.patch(f"/instances/{item['id']}", json={"stop_at": _soon(3)}).status_code == 200
    server.stop()
    time.sleep(4)
    assert ec2_state(fresh_emulator, item["id"]) == "running"  # nobody stopped it while the server was down
    server.start()
    wait_until(lambda: ec2_state(fresh_emulator, item["id"]) == "stopped", timeout=20, interval=0.5)
    wait_until(lambda: auto_stopped(api, item["id"]), timeout=10)


def test_patch_rules(api, server, fresh_emulator):
    item = created(api, auto_stop_minutes=None)
    assert item["stop_at"] is None and item["auto_stop_minutes"] is None
    api.post("/instances/sync").raise_for_status()
    rearmed = api.patch(f"/instances/{item['id']}", json={"auto_stop_minutes": 90}).json()
    assert rearmed["auto_stop_minutes"] == 90 and rearmed["stop_at"]
    assert api.patch(f"/instances/{item['id']}", json={"stop_at": "2020-01-01T00:00:00Z"}).json()["code"] == \
        "stop_at_in_past"
    for bad in ({}, {"stop_at": None, "auto_stop_minutes": 5}, {"auto_stop_minutes": 0},
                {"stop_at": "2030-01-01T00:00:00"}, {"other": 1}):
        assert api.patch(f"/instances/{item['id']}", json=bad).status_code == 422, bad
    api.post(f"/instances/{item['id']}/stop")
    api.post("/instances/sync").raise_for_status()
    stopped = api.get(f"/instances/{item['id']}").json()
    assert stopped["state"] == "stopped" and stopped["stop_at"] is None
    assert api.patch(f"/instances/{item['id']}", json={"stop_at": _soon(600)}).json()["code"] == "wrong_state"
    started = api.post(f"/instances/{item['id']}/start").json()
    assert started["stop_at"] is not None  # every start re-arms it from auto_stop_minutes
    assert api.patch("/instances/i-00000000000000000", json={"stop_at": None}).status_code == 404
