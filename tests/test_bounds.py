"""Bounded waits and smaller holes: a busy CLI is a quick 503, sweeps go first, an adopted instance of a
type the policy does not allow cannot be started. Real server, scripts, `aws` and moto."""

import threading
import time

import httpx
import pytest

from tests.support.processes import wait_quiet, wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer, aws_error, synced_client

BODY = {"name": "bounded", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}
TIMEOUT = 6


# Settings of the module's api_server (conftest.py).
SERVER_ENV = {"MAX_AWS_PROCESSES": "1", "AWS_CLI_TIMEOUT_SECONDS": str(TIMEOUT),
              "RECONCILE_INTERVAL_SECONDS": "3600"}


@pytest.fixture
def server(api_server):
    return api_server


@pytest.fixture
def adopted(api_server, fresh_emulator):
    """A client and a running instance the server tracks, to hold the only slot with its stop: launched in the
    fresh emulator and adopted by the sync the client makes anyway (tests/support/seeding.py; creating is not
    the subject)."""
    [box] = launch_managed(fresh_emulator, name=BODY["name"])
    with synced_client(api_server) as client:
        adopt(client, [box])
        yield client, box


def in_background(server: ApiServer, method: str, path: str, **kwargs) -> tuple[threading.Thread, list]:
    out: list[httpx.Response] = []

    def call() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            out.append(client.request(method, path, **kwargs))

    thread = threading.Thread(target=call)
    thread.start()
    return thread, out


def operations(server: ApiServer, since: int) -> list[str]:
    names = ("run-instances", "stop-instances", "describe-instances", "start-instances")
    return [next(n for n in names if n in call) for call in server.aws_calls()[since:]
            if any(n in call for n in names)]


def test_a_call_that_finds_no_free_slot_is_a_503_within_the_timeout(adopted, server):
    api, instance_id = adopted
    server.set_faults({"op": "stop-instances", "delay": 60})  # holds the only slot until it is killed
    holder, _ = in_background(server, "POST", f"/instances/{instance_id}/stop")
    wait_until(lambda: any("stop-instances" in c for c in server.aws_calls()), interval=0.05)
    before = len(server.aws_calls())
    t0 = time.monotonic()
    response = api.post("/instances", json=BODY | {"name": "waits"})
    took = time.monotonic() - t0
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "aws_busy" and int(response.headers["Retry-After"]) > 0
    assert TIMEOUT / 2 - 1 < took < TIMEOUT / 2 + 2, took  # the wait counts toward the deadline: no 504 after it
    assert not [c for c in server.aws_calls()[before:] if "run-instances" in c]  # nothing was sent
    holder.join()


def test_a_sweep_goes_before_user_calls_waiting_for_a_slot(adopted, server):
    _, instance_id = adopted
    refuse = aws_error("IncorrectInstanceState", "StopInstances", f"The instance '{instance_id}' is not in a "
                       "state from which it can be stopped.")
    server.set_faults({"op": "stop-instances", "delay": 2, "fail": refuse})
    wait_quiet(server)  # the sweep the previous test's timed-out stop asked for has run: it cannot queue below
    mark = len(server.aws_calls())
    holder, _ = in_background(server, "POST", f"/instances/{instance_id}/stop")
    wait_until(lambda: "stop-instances" in operations(server, mark), interval=0.05)
    queued = [in_background(server, "POST", "/instances", json=BODY | {"name": f"queued-{i}"}) for i in range(2)]
    time.sleep(0.3)  # both creates are waiting for the slot
    sync, results = in_background(server, "POST", "/instances/sync")
    for thread, _ in [(holder, None), *queued, (sync, None)]:
        thread.join()
    assert results[0].status_code == 200
    ops = operations(server, mark)
    assert ops[:2] == ["stop-instances", "describe-instances"], ops  # the sweep jumped the queue


def test_starting_an_adopted_instance_of_a_type_not_allowed_is_refused(api, server, fresh_emulator):
    [instance_id] = launch_managed(fresh_emulator, name="big", instance_type="t3.small")
    fresh_emulator.ec2.stop_instances(InstanceIds=[instance_id])
    api.post("/instances/sync").raise_for_status()
    assert api.get(f"/instances/{instance_id}").json()["state"] == "stopped"
    before = len(server.aws_calls())
    response = api.post(f"/instances/{instance_id}/start")
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "instance_type_not_allowed" and "t3.small" in response.json()["detail"]
    assert server.mutations_since(before) == []
    assert fresh_emulator.instances()[instance_id]["State"]["Name"] == "stopped"
    assert api.delete(f"/instances/{instance_id}").status_code == 202  # lowering cost stays allowed
