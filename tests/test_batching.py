"""Coalesced transitions and bulk actions through the real server, scripts, CLI and emulator: concurrent
stops go out as one `aws` process, one id EC2 refuses fails only its own caller, and POST /instances/actions
acts on ids or a selector with one process."""

import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import httpx
import pytest

from tests.support.processes import ROOT, safe_env, wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import aws_error

BODY = {"name": "batch", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}
# Requests sent together may reach a busy test machine a few hundred ms apart: a window wide enough that
# "together" means the same batch here (the default, 25 ms, is measured by make bench).
SERVER_ENV = {"TRANSITION_WINDOW_MS": "250"}


@pytest.fixture
def api(api_server, fresh_emulator, reader):
    """conftest's `api` without its sync (its `reader` on a fresh emulator): every test here first launches its
    instances (launch()), and the sync that adopts them also catches the record up with the emulator's reset (the
    fixture's sync was a second one, one `aws` process per test). No faults are injected."""
    yield reader
    api_server.set_faults()


def launch(api, emulator, count: int, tags: dict[str, str] | None = None) -> list[str]:
    """`count` running instances the server tracks, launched in the emulator and adopted by a sync
    (tests/support/seeding.py): what this module tests is how their stops, starts and deletes are batched."""
    [ids] = launch_each(api, emulator, (count, tags))
    return ids


def launch_each(api, emulator, *batches: tuple[int, dict[str, str] | None]) -> list[list[str]]:
    """launch() for several batches (a count and their tags each), adopted by one sync for all."""
    launched = [launch_managed(emulator, count, name=BODY["name"], tags=tags) for count, tags in batches]
    adopt(api, [i for ids in launched for i in ids])
    return launched


def calls_of(api_server, mark: int, operation: str) -> list[list[str]]:
    return [c for c in api_server.aws_calls()[mark:] if operation in c]


def ids_in(call: list[str]) -> list[str]:
    return [a for a in call if a.startswith("i-")]


def concurrently(url: str, paths: list[str]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(paths)) as pool, httpx.Client(base_url=url, timeout=60) as client:
        return list(pool.map(lambda path: client.post(path), paths))


def test_eight_concurrent_stops_are_one_aws_process(api, api_server, fresh_emulator):
    boxes = launch(api, fresh_emulator, 8)
    mark = len(api_server.aws_calls())
    answers = concurrently(api_server.url, [f"/instances/{b}/stop" for b in boxes])
    assert [a.status_code for a in answers] == [202] * 8
    assert [a.json()["id"] for a in answers] == boxes  # each caller gets its own instance
    assert all(a.json()["state"] in ("stopping", "stopped") for a in answers)
    stops = calls_of(api_server, mark, "stop-instances")
    assert len(stops) == 1 and sorted(ids_in(stops[0])) == sorted(boxes), stops


def test_an_id_ec2_refuses_fails_only_its_caller(api, api_server, fresh_emulator):
    boxes = launch(api, fresh_emulator, 4)
    bad = boxes[2]
    # EC2's answer when one instance of the call cannot be stopped: the whole call fails, naming it.
    api_server.set_faults({"op": "stop-instances", "match": [bad], "times": 1, "fail": aws_error(
        "IncorrectInstanceState", "StopInstances",
        f"This instance '{bad}' is not in a state from which it can be stopped.")})
    mark = len(api_server.aws_calls())
    answers = dict(zip(boxes, concurrently(api_server.url, [f"/instances/{b}/stop" for b in boxes]), strict=True))
    assert (answers[bad].status_code, answers[bad].json()["code"]) == (409, "wrong_state")
    assert answers[bad].json()["aws_error_code"] == "IncorrectInstanceState"
    assert all(answers[b].status_code == 202 for b in boxes if b != bad)
    stops = [sorted(ids_in(c)) for c in calls_of(api_server, mark, "stop-instances")]
    # The call with the bad id failed as a whole; it was sent again without it, and only without it.
    with_bad = [c for c in stops if bad in c]
    assert len(with_bad) == 1 and len(with_bad[0]) > 1, stops
    assert sorted(i for c in stops if bad not in c for i in c) == sorted(b for b in boxes if b != bad), stops
    assert api.get(f"/instances/{bad}").json()["state"] == "running"


def test_bulk_stop_by_ids_one_process_a_result_per_instance(api, api_server, fresh_emulator):
    boxes, [already] = launch_each(api, fresh_emulator, (3, None), (1, None))
    assert api.post(f"/instances/{already}/stop").status_code == 202
    # Recorded stopped by the sweep the stop asked for (a sync of its own here was one more `aws` process).
    wait_until(lambda: api.get(f"/instances/{already}").json()["state"] == "stopped", timeout=30)
    unknown = "i-0000000000000000f"
    mark = len(api_server.aws_calls())
    got = api.post("/instances/actions", json={"action": "stop", "ids": [*boxes, already, unknown, boxes[0]]})
    assert got.status_code == 200, got.text
    results = {r["id"]: r for r in got.json()["results"]}
    assert [r["id"] for r in got.json()["results"]] == [*boxes, already, unknown]  # repeats count once
    assert all(results[b]["status"] == 202 and results[b]["state"] in ("stopping", "stopped") for b in boxes)
    assert (results[already]["status"], results[already]["error"]) == (200, None)
    assert (results[unknown]["status"], results[unknown]["error"]["code"]) == (404, "instance_not_found")
    stops = calls_of(api_server, mark, "stop-instances")
    assert len(stops) == 1 and sorted(ids_in(stops[0])) == sorted(boxes)


def test_bulk_by_selector_acts_on_the_matching_instances_only(api, api_server, fresh_emulator):
    web, data = launch_each(api, fresh_emulator, (5, {"Team": "web"}), (2, {"Team": "data"}))
    mark = len(api_server.aws_calls())
    got = api.post("/instances/actions", json={"action": "stop", "selector": {"tag": {"Team": "web"},
                                                                              "state": ["running"]}})
    assert got.status_code == 200, got.text
    assert sorted(r["id"] for r in got.json()["results"]) == sorted(web)
    assert all(r["status"] == 202 for r in got.json()["results"])
    assert len(calls_of(api_server, mark, "stop-instances")) == 1
    states = {i: d["State"]["Name"] for i, d in fresh_emulator.instances().items()}
    assert all(states[i] == "stopped" for i in web) and all(states[i] == "running" for i in data)
    # Start them again, then delete them: one process each.
    mark = len(api_server.aws_calls())
    started = api.post("/instances/actions", json={"action": "start", "ids": web}).json()["results"]
    assert [r["status"] for r in started] == [202] * 5
    deleted = api.post("/instances/actions", json={"action": "delete", "selector": {"tag": {"Team": "web"}}})
    assert [r["status"] for r in deleted.json()["results"]] == [202] * 5
    assert len(calls_of(api_server, mark, "start-instances")) == 1
    assert len(calls_of(api_server, mark, "terminate-instances")) == 1


@pytest.mark.parametrize("body", [
    {"action": "stop"},
    {"action": "stop", "ids": ["i-0123456789abcdef0"], "selector": {"state": ["running"]}},
    {"action": "stop", "selector": {}},
    {"action": "stop", "ids": []},
    {"action": "stop", "ids": ["i-xyz"]},
    {"action": "reboot", "ids": ["i-0123456789abcdef0"]},
    {"action": "stop", "ids": [f"i-{n:017x}" for n in range(1001)]},
    {"action": "stop", "selector": {"state": ["sleeping"]}},
    {"action": "stop", "ids": None, "selector": {"state": ["running"]}},
])
def test_bad_bulk_requests_are_422_and_spawn_nothing(api_server, body):
    """Only refusals: neither a fresh emulator nor a sweep is needed (the `api` fixture's reset and sync)."""
    mark = len(api_server.aws_calls())
    with httpx.Client(base_url=api_server.url, timeout=60) as api:
        got = api.post("/instances/actions", json=body)
    assert (got.status_code, got.json()["code"]) == (422, "validation_error"), got.text
    assert api_server.mutations_since(mark, ignore_tidying=True) == []  # no reset: earlier tests' groups


def test_the_offhours_script_stops_the_tagged_boxes_in_one_call(api, api_server, fresh_emulator):
    office, [always] = launch_each(api, fresh_emulator, (3, {"Schedule": "office-hours"}), (1, {"Schedule": "always"}))
    mark = len(api_server.aws_calls())
    done = subprocess.run([str(ROOT / "scripts" / "bulk_action.sh"), "stop", "--tag", "Schedule=office-hours",
                           "--state", "running", "--url", api_server.url], capture_output=True, text=True,
                          timeout=120, env=safe_env())
    assert done.returncode == 0, done.stderr
    assert all(f"{b}  202  " in done.stdout for b in office) and always not in done.stdout
    assert "stop: 3 instance(s) matched" in done.stdout and "0 failed" in done.stdout
    assert len(calls_of(api_server, mark, "stop-instances")) == 1
    assert fresh_emulator.instances()[always]["State"]["Name"] == "running"
    # A failing instance makes the job fail; bad arguments are usage errors that call nothing.
    # Recorded stopped (what a start by tag picks by default) by the sweep the stop asked for, not by a sync.
    wait_until(lambda: all(api.get(f"/instances/{b}").json()["state"] == "stopped" for b in office), timeout=30)
    api_server.set_faults({"op": "start-instances", "fail": aws_error(
        "InsufficientInstanceCapacity", "StartInstances", "We currently do not have sufficient t3.micro capacity.")})
    failed = subprocess.run([str(ROOT / "scripts" / "bulk_action.sh"), "start", "--tag", "Schedule=office-hours",
                             "--url", api_server.url], capture_output=True, text=True, timeout=120, env=safe_env())
    lines = [line.split() for line in failed.stdout.splitlines() if line.startswith("i-")]
    assert failed.returncode == 1 and sorted(line[0] for line in lines) == sorted(office), failed.stdout
    assert all(line[1] == "503" and line[3] == "aws_capacity" for line in lines), failed.stdout
    for args in (["stop"], ["--tag", "a=b"], ["reboot", "--tag", "a=b"], ["stop", "--tag", "novalue"],
                 ["stop", "--tag", "a=b", "--url", "file:///etc/passwd"]):
        usage = subprocess.run([str(ROOT / "scripts" / "bulk_action.sh"), *args], capture_output=True, text=True,
                               timeout=30, env=safe_env())
        assert usage.returncode == 2 and "Usage:" in usage.stderr, (args, usage.stderr)


def test_a_selector_picks_only_this_servers_ec2(api, api_server, fresh_emulator):
    here, elsewhere = launch(api, fresh_emulator, 2, tags={"Team": "scoped"})
    with closing(sqlite3.connect(api_server.db_path)) as conn, conn:
        conn.execute("UPDATE instances SET endpoint = 'http://127.0.0.1:1' WHERE id = ?", (elsewhere,))
    got = api.post("/instances/actions", json={"action": "stop", "selector": {"tag": {"Team": "scoped"}}})
    assert [r["id"] for r in got.json()["results"]] == [here]  # not a 409 other_endpoint for the other
