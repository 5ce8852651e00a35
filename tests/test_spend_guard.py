"""The spend guard through the real server, scripts, `aws` and moto: launch flags and the budget
(auto-stop: test_auto_stop.py)."""

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.processes import wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer

BODY = {"name": "guarded", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}


@pytest.fixture
def serve(fresh_emulator, tmp_path) -> Iterator[Callable[..., tuple[ApiServer, httpx.Client]]]:
    """serve(**env) starts the test's own server (and a client on it) on the fresh emulator. A test that needs
    instances launches them first: the server's start-up sweep adopts them (adopt() then syncs nothing)."""
    started: list[tuple[ApiServer, httpx.Client]] = []

    def serve_(**env: str) -> tuple[ApiServer, httpx.Client]:
        server = ApiServer(tmp_path, fresh_emulator.url, **env)
        started.append((server, httpx.Client(base_url=server.url, timeout=60)))
        return started[-1]

    yield serve_
    for server, client in started:
        client.close()
        server.stop()


def swept_in(api: httpx.Client, ids: list[str]) -> list[dict]:
    """The records of `ids`, launched before the server started, once its start-up sweep has adopted them (no
    sync of our own: one `aws` process less)."""
    wait_until(lambda: all(api.get(f"/instances/{i}").json().get("state") == "running" for i in ids), timeout=30)
    return adopt(api, ids)


def created(api: httpx.Client, **overrides) -> dict:
    response = api.post("/instances", json=BODY | overrides)
    assert response.status_code == 201, response.text
    return response.json()


def calls_of(server: ApiServer, operation: str, mark: int = 0) -> list[list[str]]:
    return [c for c in server.aws_calls()[mark:] if operation in c]


def ec2_state(emulator, instance_id: str) -> str:
    return emulator.instances()[instance_id]["State"]["Name"]


def restart(server: ApiServer, **env: str) -> None:
    server.stop()
    server.env |= env
    server.start()


def test_over_budget_creates_and_starts_are_refused_without_a_process_stop_and_delete_pass(serve, fresh_emulator):
    # Two running boxes (adopted: each armed for DEFAULT_AUTO_STOP_MINUTES, 480, as a default create is).
    boxes = launch_managed(fresh_emulator, 2, name=BODY["name"])
    server, api = serve()  # after the launch: its start-up sweep adopts them
    first, second = swept_in(api, boxes)
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

    longer = api.patch(f"/instances/{second['id']}", json={"auto_stop_minutes": 10080})  # a week more of compute
    month_end = datetime.fromisoformat(api.get("/budget").json()["period_end"].replace("Z", "+00:00"))
    if month_end - datetime.now(UTC) > timedelta(hours=9):
        assert longer.status_code == 409 and longer.json()["code"] == "budget_exceeded"
        assert api.get(f"/instances/{second['id']}").json()["auto_stop_minutes"] == 480  # unchanged
    else:  # its 480 minutes already reach past the period's end: running longer commits nothing more
        assert longer.status_code == 200
    assert api.patch(f"/instances/{second['id']}", json={"auto_stop_minutes": 60}).status_code == 200  # shorter: ok
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


@pytest.fixture(scope="module")
def priced_server(emulator, tmp_path_factory) -> Iterator[ApiServer]:
    """A server that allows t3.small but has no price for it (PRICES_FILE), shared by the two tests that set no
    budget (one server start less). It starts on an emptied emulator and the budget test runs first: its record
    then holds that test's instance only."""
    emulator.reset()
    tmp = tmp_path_factory.mktemp("priced")
    server = ApiServer(tmp, emulator.url, ALLOWED_INSTANCE_TYPES="t3.micro,t4g.micro,t3.small",
                       PRICES_FILE=str(_prices_without(tmp, "t3.small")))
    yield server
    server.stop()


@pytest.fixture
def priced_api(priced_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=priced_server.url, timeout=60) as client:
        yield client


def test_budget_shows_the_period_every_instance_and_a_missing_price_is_a_400(priced_api, priced_server,
                                                                              fresh_emulator):
    api, server = priced_api, priced_server
    [box] = adopt(api, launch_managed(fresh_emulator, name=BODY["name"]))
    item = api.patch(f"/instances/{box['id']}", json={"auto_stop_minutes": 30}).json()
    assert item["auto_stop_minutes"] == 30
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

    mark = len(server.aws_calls())
    response = api.post("/instances", json=BODY | {"instance_type": "t3.small"})
    assert response.status_code == 400 and response.json()["code"] == "price_unknown"
    assert "PRICES_FILE" in response.json()["detail"] and server.aws_calls()[mark:] == []


def test_t_instances_launch_on_standard_credits_and_without_a_public_ip_when_asked(priced_api, priced_server,
                                                                                   fresh_emulator):
    api, server = priced_api, priced_server  # no price or budget in question: the module's shared server
    mark = len(server.aws_calls())
    plain = created(api, name="with-ip")
    private = created(api, name="no-ip", associate_public_ip=False, ssh_from="none")  # no rule: no SSH without an IP
    launches = calls_of(server, "run-instances", mark)
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
    assert record["public_ip"] is None and record["ssh_string"] is None  # no sentence in it (issue 25)
    assert "no public IPv4 address" in record["ssh_unavailable"]
    assert api.get(f"/instances/{plain['id']}").json()["ssh_string"].startswith("ssh -i ")


def _prices_without(tmp, instance_type: str):
    from app.config import DEFAULT_PRICES_FILE

    doc = json.loads(DEFAULT_PRICES_FILE.read_text())
    for region in doc["regions"].values():
        region["instance_hourly"].pop(instance_type, None)
    path = tmp / "prices.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_bulk_start_is_admitted_as_one_set_or_not_at_all(serve, fresh_emulator):
    launched = launch_managed(fresh_emulator, 3, name=BODY["name"])
    server, api = serve()  # after the launch: its start-up sweep adopts them
    boxes = [box["id"] for box in swept_in(api, launched)]
    for box in boxes:  # a start re-arms this: what one start commits is 600 minutes of compute (to the period end)
        assert api.patch(f"/instances/{box}", json={"auto_stop_minutes": 600}).status_code == 200
    running = api.get("/budget").json()["committed_usd"]
    api.post("/instances/actions", json={"action": "stop", "ids": boxes}).raise_for_status()
    api.post("/instances/sync").raise_for_status()
    stopped = api.get("/budget").json()["committed_usd"]  # their storage, to the period end
    one = (running - stopped) / 3  # what one start commits: a run of 600 minutes, as each of the three had
    assert one > 0
    restart(server, BUDGET_USD=f"{stopped + one * 2.5:.6f}")  # room for two starts, not three

    mark = len(server.aws_calls())
    refused = api.post("/instances/actions", json={"action": "start", "ids": boxes})
    assert (refused.status_code, refused.json()["code"]) == (409, "budget_exceeded"), refused.text
    assert "3 instances" in refused.json()["detail"]
    assert calls_of(server, "start-instances", mark) == []  # none started: not two of three
    assert {ec2_state(fresh_emulator, b) for b in boxes} == {"stopped"}
    two = api.post("/instances/actions", json={"action": "start", "ids": boxes[:2]})
    assert two.status_code == 200, two.text
    assert [r["status"] for r in two.json()["results"]] == [202, 202]
    assert len(calls_of(server, "start-instances", mark)) == 1
