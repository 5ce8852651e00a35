"""/schedules in process (no `aws` process is ever needed): what is stored, the 422s that name the field, 404 and
409, who may do what with tokens per person, and what a change does to the instances on the schedule. The
service is the real one on a real SQLite store; the clock is fixed at Monday 2026-12-07 10:00 UTC."""

import hashlib
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from app.api.deps import get_settings, get_store
from app.aws.runner import AwsCli
from app.config import Settings
from app.core import clock
from app.instances.service import InstanceService
from app.main import create_app
from app.schedules.deps import get_schedule_service
from app.schedules.planner import Calendars, SchedulePlanner
from app.schedules.service import ScheduleService
from app.store import Database
from app.store.rows import InstanceState

TOKENS = {"root": ("root-token-0123456789abcdef", "admin"), "alice": ("alice-token-0123456789abcdef", "user"),
          "bob": ("bob-token-0123456789abcdef", "user")}
OFFICE = {"name": "office", "timezone": "Europe/Berlin",
          "periods": [{"days": "mon-fri", "start": "09:00", "stop": "18:00"}], "holidays": ["2026-12-24"]}


@pytest.fixture
def db(tmp_path):
    store = Database(tmp_path / "schedules.db")
    store.migrate()
    clock.start_at(datetime(2026, 12, 7, 10, tzinfo=UTC))
    yield store
    clock.start_at(None)
    store.dispose()


def make_client(tmp_path, db: Database, tokens: bool = False) -> TestClient:
    extra = {}
    if tokens:
        path = tmp_path / "tokens.toml"
        path.write_text("".join(f'[[users]]\nname = "{name}"\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"'
                                f'\nrole = "{role}"\n\n' for name, (token, role) in TOKENS.items()))
        extra = {"api_tokens_file": path}
    settings = Settings(_env_file=None, ec2_endpoint_url="http://127.0.0.1:9", aws_access_key_id="testing",  # type: ignore[call-arg]
                        database_url=str(db.name), **extra)
    service = InstanceService(settings, db, AwsCli(settings))
    calendars = Calendars(db)
    service.recorder.planner = SchedulePlanner(db, calendars)
    schedules = ScheduleService(db, service, calendars)
    app = create_app(lambda: settings)
    app.dependency_overrides |= {get_settings: lambda: settings, get_store: lambda: db,
                                 get_schedule_service: lambda: schedules}
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path, db):
    return make_client(tmp_path, db)


def seed(db: Database, instance_id: str, owner: str | None = None, schedule: str | None = "office",
         state: InstanceState = InstanceState.STOPPED, **fields) -> None:
    now = clock.utcnow()
    db.upsert_instance({"id": instance_id, "name": instance_id, "state": state, "instance_type": "t3.micro",
                        "region": "us-east-1", "storage_gb": 8, "owner": owner, "schedule": schedule,
                        "created_at": now, "updated_at": now, **fields})


def test_a_schedule_is_stored_listed_and_read_as_sent(client):
    created = client.post("/schedules", json=OFFICE)
    assert created.status_code == 201, created.text
    body = created.json()
    assert {k: body[k] for k in OFFICE} == OFFICE and body["respect_manual_stop"] is True and body["created_at"]
    assert client.get("/schedules").json()["schedules"] == [body]
    assert client.get("/schedules/office").json() == body
    again = client.post("/schedules", json=OFFICE)
    assert again.status_code == 409 and again.json()["code"] == "schedule_exists"
    for method, path in (("GET", "/schedules/nope"), ("PUT", "/schedules/nope"), ("DELETE", "/schedules/nope"),
                         ("GET", "/schedules/nope/preview")):
        response = client.request(method, path, json={k: v for k, v in OFFICE.items() if k != "name"})
        assert response.status_code == 404 and response.json()["code"] == "schedule_not_found", (method, path)


@pytest.mark.parametrize("change, where", [
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"timezone": "../etc/passwd"}, "timezone"),
    ({"timezone": "America"}, "timezone"),
    ({"periods": [{"days": "funday", "start": "09:00"}]}, "periods[0].days"),
    ({"periods": [{"days": "mon", "start": "9:00"}]}, "periods[0].start"),
    ({"periods": [{"days": "mon", "stop": "24:00"}]}, "periods[0].stop"),
    ({"periods": [{"days": "mon"}]}, "periods[0]"),
    ({"periods": []}, "periods"),
    ({"periods": [{"days": "mon-fri", "start": "09:00", "stop": "18:00"},
                  {"days": "fri", "start": "17:00", "stop": "20:00"}]}, "periods[1]"),
    ({"holidays": ["2026-02-30"]}, "holidays[0]"),
    ({"name": "bad name"}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"respect_manual_stop": "yes"}, "respect_manual_stop"),
    ({"period": []}, "period"),
])
def test_a_bad_field_is_a_422_that_names_it(client, change, where):
    response = client.post("/schedules", json=OFFICE | change)
    assert response.status_code == 422, response.text
    assert where in response.json()["detail"], response.json()["detail"]
    assert client.get("/schedules").json()["schedules"] == []  # nothing stored


def test_a_schedule_in_use_is_not_deleted_and_the_409_lists_its_instances(client, db):
    client.post("/schedules", json=OFFICE)
    seed(db, "i-00000000000000001")
    refused = client.delete("/schedules/office")
    assert refused.status_code == 409 and refused.json()["code"] == "schedule_in_use"
    assert refused.json()["instance_ids"] == ["i-00000000000000001"]
    db.update_instance("i-00000000000000001", {"state": InstanceState.TERMINATED})  # a terminated one holds none
    assert client.delete("/schedules/office").status_code == 204
    assert client.get("/schedules/office").status_code == 404


def test_a_change_plans_the_running_instances_stops_again_and_keeps_a_snooze(client, db):
    client.post("/schedules", json=OFFICE)
    seed(db, "i-00000000000000001", state=InstanceState.RUNNING, auto_stop_default=1,
         stop_at="2026-12-07T17:00:00.000000Z", stop_source="schedule")
    seed(db, "i-00000000000000002", state=InstanceState.RUNNING, auto_stop_default=1,
         stop_at="2026-12-07T19:00:00.000000Z", stop_source="schedule", snoozed_until="2026-12-07T19:00:00.000000Z")
    shorter = {k: v for k, v in OFFICE.items() if k != "name"} | {
        "periods": [{"days": "mon-fri", "start": "09:00", "stop": "13:00"}]}
    assert client.put("/schedules/office", json=shorter).status_code == 200
    assert db.get_instance("i-00000000000000001")["stop_at"] == "2026-12-07T12:00:00.000000Z"  # 13:00 in Berlin
    assert db.get_instance("i-00000000000000002")["stop_at"] == "2026-12-07T19:00:00.000000Z"
    assert client.get("/schedules/office").json()["periods"][0]["stop"] == "13:00"


def test_with_tokens_admins_define_schedules_and_users_list_preview_and_see_only_their_own(tmp_path, db):
    client = make_client(tmp_path, db, tokens=True)
    auth = {name: {"Authorization": f"Bearer {token}"} for name, (token, _) in TOKENS.items()}
    refused = client.post("/schedules", json=OFFICE, headers=auth["alice"])
    assert refused.status_code == 403 and refused.json()["code"] == "admin_only"
    assert client.post("/schedules", json=OFFICE, headers=auth["root"]).status_code == 201
    body = {k: v for k, v in OFFICE.items() if k != "name"}
    assert client.put("/schedules/office", json=body, headers=auth["alice"]).status_code == 403
    assert client.delete("/schedules/office", headers=auth["bob"]).status_code == 403
    assert client.get("/schedules", headers=auth["alice"]).json()["schedules"][0]["name"] == "office"
    assert client.get("/schedules").status_code == 401
    seed(db, "i-00000000000000001", owner="alice")
    seed(db, "i-00000000000000002", owner="bob")
    preview = client.get("/schedules/office/preview", params={"days": 7}, headers=auth["alice"]).json()
    assert {i for a in preview["actions"] for i in a["instance_ids"]} == {"i-00000000000000001"}
    everyone = client.get("/schedules/office/preview", params={"days": 7}, headers=auth["root"]).json()
    assert {i for a in everyone["actions"] for i in a["instance_ids"]} == {"i-00000000000000001",
                                                                         "i-00000000000000002"}
    assert everyone["estimated_savings_usd"] == pytest.approx(2 * preview["estimated_savings_usd"])
    # From Monday 11:00 in Berlin for 7 days: today's last 7 hours, four 9-hour days, next Monday's first 2.
    assert preview["running_hours"] == 7 + 4 * 9 + 2
