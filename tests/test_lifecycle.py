"""Lifecycle you can trust: retry-safe create, serialised mutations, crash and shutdown recovery.

Real server process, real bash scripts and `aws`, real moto server.
"""

import os
import signal
import threading
import time

import httpx
import pytest

from tests.support.processes import descendants, wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer

# No SSH rule (ssh_from none): no test here is about SSH, and the rule is one `aws` process per create.
BODY = {"name": "idem", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "ssh_from": "none"}
# The crash test's creates: the kill lands once two launches are under way, the third anywhere from its group to
# its launch. Three creates still race one another (for the launch records, each under the store's write lock)
# and the kill (cut short at different steps); each costs a group and a launch, and its replay up to three `aws`
# processes more (five creates were ten `aws` processes more per engine for the same assertions).
BURST = 3


@pytest.fixture
def server(fresh_emulator, tmp_path, database_env):
    """A server of the test's own, for the crash test: it compares everything the server tracks with everything
    live in EC2, so neither may hold what earlier tests made. EC2 is reset before it starts (reset after, what its
    start-up sweep adopted vanished, and the restarted server looked it up)."""
    srv = ApiServer(tmp_path, fresh_emulator.url, **database_env)
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    """A client on the test's own server (which starts with the AMI catalogue: no warm-up create is needed)."""
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture
def client(api_server):
    """A client on the module's server (conftest's api_server, on the module's engine), EC2 as the module's
    earlier tests left it: their keys differ, each counts only the `aws` processes it causes and looks only at
    the instance it made, by its id or by its key's launches. Only the create the test that counts EC2's instances
    named "idem" looks at (order_42, made first) resets EC2. A reset per test cost the emulator's reload, and the
    server a lookup for the instances it made vanish."""
    api_server.set_faults()
    with httpx.Client(base_url=api_server.url, timeout=120) as http:
        yield http


def run_instances_calls(server: ApiServer) -> list[list[str]]:
    return [c for c in server.aws_calls() if "run-instances" in c]


def managed_live(emulator) -> set[str]:
    return {i for i, d in emulator.instances(managed_only=True).items() if d["State"]["Name"] != "terminated"}


def tracked(api: httpx.Client) -> list[str]:
    return [i["id"] for i in api.get("/instances").json()["instances"]]


# -- Idempotency-Key ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def order_42(api_server, emulator):
    """One create with the key "order-42" in a freshly reset EC2: the retried create's subject, and the launch record
    that the other body is refused against (a create of its own there was three `aws` processes)."""
    emulator.reset()
    api_server.set_faults()
    with httpx.Client(base_url=api_server.url, timeout=120) as http:
        first = http.post("/instances", json=BODY, headers={"Idempotency-Key": "order-42"})
    return first, run_instances_calls(api_server)[-1]


def test_same_key_same_body_returns_the_same_instance_without_a_second_launch(client, api_server, emulator,
                                                                             order_42):
    first, call = order_42
    launches = len(run_instances_calls(api_server))
    again = client.post("/instances", json=BODY, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(run_instances_calls(api_server)) == launches  # no second aws process
    assert call[call.index("--client-token") + 1] == "order-42"  # EC2 dedupes a retried launch too
    names = [{t["Key"]: t["Value"] for t in d["Tags"]}["Name"] for d in emulator.instances().values()]
    assert names.count("idem") == 1


def test_same_key_other_body_is_409(client, order_42):
    assert order_42[0].status_code == 201
    other = client.post("/instances", json=BODY | {"name": "other"}, headers={"Idempotency-Key": "order-42"})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


def test_concurrent_retries_with_one_key_launch_once(client, api_server):
    before = len(run_instances_calls(api_server))
    results: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=api_server.url, timeout=120) as each:
            results.append(each.post("/instances", json=BODY, headers={"Idempotency-Key": "burst-1"}))

    threads = [threading.Thread(target=post) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [201] * 5
    assert len({r.json()["id"] for r in results}) == 1
    assert len(run_instances_calls(api_server)) - before == 1


def test_long_keys_become_a_64_char_client_token(client, api_server):
    key = "k" * 200
    assert client.post("/instances", json=BODY, headers={"Idempotency-Key": key}).status_code == 201
    call = run_instances_calls(api_server)[-1]
    token = call[call.index("--client-token") + 1]
    assert len(token) == 64 and token != key[:64]


@pytest.mark.parametrize("key", ["", "has space", "x" * 256])
def test_malformed_keys_are_422(reader, api_server, key):
    """Refused before any `aws` process: nothing in EC2 is read or changed (the reader client: no reset)."""
    before = len(api_server.aws_calls())
    response = reader.post("/instances", json=BODY, headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert api_server.mutations_since(before) == []


# -- serialised mutations ----------------------------------------------------------------------
def test_start_and_stop_racing_end_consistent(client, api_server, emulator):
    # A running instance the server tracks: how it came to be tracked is not what this tests (seeding.py).
    [instance_id] = launch_managed(emulator, name=BODY["name"])
    adopt(client, [instance_id])
    statuses: list[int] = []

    def hit(action: str) -> None:
        with httpx.Client(base_url=api_server.url, timeout=120) as each:
            statuses.append(each.post(f"/instances/{instance_id}/{action}").status_code)

    # Two stops and two starts at once: each contends with an opposite action for the instance's lock, in an
    # order no one chooses (eight requests were up to eight `aws` processes for the same race).
    threads = [threading.Thread(target=hit, args=(a,)) for a in ["stop", "start"] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) <= {200, 202, 409} and len(statuses) == 4
    client.post("/instances/sync")
    ec2_state = emulator.instances()[instance_id]["State"]["Name"]
    assert client.get(f"/instances/{instance_id}").json()["state"] == ec2_state


# -- crashes and shutdown ----------------------------------------------------------------------
def test_sigterm_lets_an_in_flight_create_finish_and_be_recorded(client, api_server):
    # The module's server, shut down and started again (the module's last test on it): what it holds from the
    # tests before is no part of what this looks at, its own create.
    server = api_server
    outcome: dict[str, httpx.Response] = {}

    def post() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as each:
            outcome["response"] = each.post("/instances", json=BODY | {"name": "in-flight"})

    before = len(run_instances_calls(server))
    thread = threading.Thread(target=post)
    thread.start()
    wait_until(lambda: len(run_instances_calls(server)) > before, timeout=30, interval=0.02)
    server.proc.send_signal(signal.SIGTERM)
    thread.join()
    response = outcome["response"]
    assert response.status_code == 201, response.text
    assert server.proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    server.stop()
    server.start()
    assert client.get(f"/instances/{response.json()['id']}").json()["name"] == "in-flight"


def test_kill_9_mid_burst_then_restart_tracks_every_instance_once(api, server, fresh_emulator):
    results: list[object] = []

    def post(i: int) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                results.append(client.post("/instances", json=BODY | {"name": f"burst-{i}"},
                                           headers={"Idempotency-Key": f"crash-{i}"}).status_code)
        except httpx.HTTPError as exc:
            results.append(type(exc).__name__)

    before = len(run_instances_calls(server))
    threads = [threading.Thread(target=post, args=(i,)) for i in range(BURST)]
    for t in threads:
        t.start()
    wait_until(lambda: len(run_instances_calls(server)) >= before + BURST - 1, timeout=30, interval=0.05)
    time.sleep(0.3)
    victims = [server.proc.pid, *descendants(server.proc.pid)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for t in threads:
        t.join()
    server.stop()
    assert any(r != 201 for r in results), "the kill came too late to test anything"

    # Launches cut short stay unresolved until certain: the CLI timeout plus the consistency grace (8 s).
    # The periodic loop settles them; nothing else asks for a sweep. A sweep every 5 s (each is an `aws` process;
    # each second was one): the first past the grace comes within 13 s of the launches, the replays wait 40 s.
    server.env |= {"AWS_CLI_TIMEOUT_SECONDS": "5", "CONSISTENCY_GRACE_SECONDS": "3", "RECONCILE_INTERVAL_SECONDS": "5"}
    server.start()
    api.post("/instances/sync").raise_for_status()
    listed = tracked(api)
    assert len(listed) == len(set(listed))  # none twice
    assert set(listed) == managed_live(fresh_emulator)  # every live instance tracked, nothing invented

    # Replaying each key launches only what never reached EC2 (once that is certain: until then the
    # answer is 409 launch_in_progress); nothing is launched twice.
    for i in range(BURST):
        def replayed(i: int = i) -> httpx.Response | None:
            replay = api.post("/instances", json=BODY | {"name": f"burst-{i}"},
                              headers={"Idempotency-Key": f"crash-{i}"})
            assert replay.status_code == 201 or replay.json()["code"] == "launch_in_progress", replay.text
            return replay if replay.status_code == 201 else None

        wait_until(replayed, timeout=40, interval=0.5)
    names = [{t["Key"]: t["Value"] for t in d["Tags"]}["Name"] for d in fresh_emulator.instances().values()]
    assert sorted(n for n in names if n.startswith("burst-")) == [f"burst-{i}" for i in range(BURST)]
