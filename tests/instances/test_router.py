"""The /instances routes in process (TestClient, dependency overrides): request validation, the 404 of
an unknown id, the status of a transition and the mapping of every domain error to the one envelope.
No lifespan runs, so no `aws` process can start; the service and reconciler are stand-ins that record
what reached them, and the store is a real SQLite file."""

import sqlite3

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.api.deps import get_settings, get_store
from app.budget.deps import get_account_plan, get_spending
from app.budget.spending import PriceBook, Spending
from app.config import DEFAULT_PRICES_FILE, Settings
from app.core.clock import utcnow
from app.core.errors import Conflict, PolicyViolation, Unavailable, UpstreamError, UpstreamTimeout
from app.instances.deps import get_reconciler, get_service
from app.instances.schemas import SyncResult
from app.main import create_app
from app.store import Database
from app.store.rows import InstanceState

KNOWN = "i-0123456789abcdef0"
BODY = {"name": "web-1", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}


class StandIn:
    """Records each call; answers with the stored row, or raises what a test put in `raises`."""

    def __init__(self, store: Database) -> None:
        self.store = store
        self.calls: list[tuple] = []
        self.raises: BaseException | None = None
        self.changed = True
        self.replayed = False
        self.actors: list[str | None] = []
        self.spending = Spending(5.0, PriceBook.load(DEFAULT_PRICES_FILE), store, "us-east-1", "")

    def _answer(self):
        if self.raises is not None:
            raise self.raises
        return self.store.require_instance(KNOWN)

    async def create(self, body, idempotency_key, caller=None, client_ip=None):
        self.calls.append(("create", body.name, idempotency_key))
        return self._answer(), self.replayed

    async def transition(self, instance_id, action, actor=None):
        self.calls.append((action, instance_id))
        self.actors.append(actor)
        return self._answer(), self.changed

    async def sweep(self):
        self.calls.append(("sync",))
        if self.raises is not None:
            raise self.raises
        return SyncResult(adopted=[KNOWN])


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, ec2_endpoint_url="http://127.0.0.1:9", aws_access_key_id="testing",  # type: ignore[call-arg]
                    database_url=str(tmp_path / "instances.db"))


@pytest.fixture
def store(settings) -> Database:
    db = Database(settings.database_path)
    db.migrate()
    now = utcnow()
    db.upsert_instance({"id": KNOWN, "name": "web-1", "state": InstanceState.RUNNING, "public_ip": "203.0.113.9",
                        "tags": {"Team": "a"}, "login_user": "ec2-user", "region": "us-east-1",
                        "account": "123456789012", "missed_sweeps": 1, "created_at": now, "updated_at": now})
    db.add_event(KNOWN, "create", None, "running", "api")
    return db


@pytest.fixture
def stand_in(store) -> StandIn:
    return StandIn(store)


@pytest.fixture
def client(settings, store, stand_in):
    app = create_app(lambda: settings)
    app.dependency_overrides |= {get_settings: lambda: settings, get_store: lambda: store,
                                 get_service: lambda: stand_in, get_reconciler: lambda: stand_in,
                                 get_spending: lambda: stand_in.spending,
                                 get_account_plan: lambda: stand_in.account_plan}
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


def test_reads_come_from_the_store_and_show_only_public_fields(client):
    listed = client.get("/instances").json()["instances"]
    assert [i["id"] for i in listed] == [KNOWN]
    one = client.get(f"/instances/{KNOWN}").json()
    cost = one.pop("cost")
    assert one == listed[0]
    assert cost["spent_usd"] >= 0 and cost["projected_usd"] > 0  # no type recorded: storage still counts
    assert one["state"] == "running" and one["tags"] == {"Team": "a"} and one["region"] == "us-east-1"
    assert not {"account", "missed_sweeps", "missing_since", "endpoint", "ssh_group"} & set(one)
    assert "login_user" in one and "ssh_from" in one and "ssh_unavailable" in one  # issue 25: shown
    assert client.get(f"/instances/{KNOWN}/events").json()["events"][0]["to_state"] == "running"


@pytest.mark.parametrize("method, path", [
    ("GET", "/instances/{id}"), ("GET", "/instances/{id}/events"), ("DELETE", "/instances/{id}"),
    ("POST", "/instances/{id}/start"), ("POST", "/instances/{id}/stop"),
])
@pytest.mark.parametrize("instance_id", ["i-00000000000000000", "not-an-id", "i-0123456789ABCDEF0"])
def test_an_unknown_id_is_404_before_the_service_is_asked(client, stand_in, method, path, instance_id):
    response = client.request(method, path.format(id=instance_id))
    assert response.status_code == 404
    assert response.json()["code"] == "instance_not_found"
    assert stand_in.calls == []


@pytest.mark.parametrize("body", [
    {}, BODY | {"name": ""}, BODY | {"storage_gb": "8"}, BODY | {"storage_gb": True},
    BODY | {"create_security_group": "yes"}, BODY | {"tags": {"Name": "x"}}, BODY | {"tags": {"aws:x": "y"}},
    BODY | {"ami": "AMI-UPPER"}, BODY | {"instance_type": "--dry-run"}, BODY | {"name": "$(reboot)"},
])
def test_a_malformed_create_is_422_and_never_reaches_the_service(client, stand_in, body):
    response = client.post("/instances", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error" and response.json()["errors"]
    assert stand_in.calls == []


@pytest.mark.parametrize("raw, where", [
    (b'{"name": "web-1",\n "ami": }', "Expecting value at line 2, column 9 (character 26)"),
    (b'{"name": "web-1"', "Expecting ',' delimiter at line 1, column 17 (character 16)"),
    (b'{"name": web}', "Expecting value at line 1, column 10 (character 9)"),
])
def test_a_body_that_is_not_json_says_where_and_what(client, stand_in, raw, where):
    response = client.post("/instances", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == f"Invalid request: the body is not valid JSON: {where}."
    assert body["code"] == "validation_error" and body["errors"][0]["type"] == "json_invalid"
    assert stand_in.calls == []


@pytest.mark.parametrize("raw, detail", [
    (b"", "Invalid request: the JSON body is missing."),
    (b"null", "Invalid request: the body must be a JSON object."),
    (b"[1]", "Invalid request: the body must be a JSON object."),
])
def test_a_missing_or_non_object_body_says_so(client, raw, detail):
    response = client.post("/instances", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"] == detail


def test_a_body_that_is_not_utf8_is_a_400_that_says_so(client, stand_in):
    response = client.post("/instances", content=b'{"name": "\xff"}', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "The body cannot be read: send JSON in UTF-8 (Content-Type: "
                                         "application/json).", "code": "invalid_body"}
    assert stand_in.calls == []


EC2_WORDS = "letters, digits, spaces and _ . : / = + - @"


@pytest.mark.parametrize("body, detail", [
    (BODY | {"name": "web$1"}, f"name: '$' is not allowed; use {EC2_WORDS}, starting with a letter or digit"),
    (BODY | {"name": "-web"}, f"name: use {EC2_WORDS}, starting with a letter or digit"),
    (BODY | {"name": "a\nb"}, f"name: '\\n' is not allowed; use {EC2_WORDS}, starting with a letter or digit"),
    (BODY | {"tags": {"Team": "a;b"}}, f"tags.Team: ';' is not allowed; use {EC2_WORDS}"),
    (BODY | {"tags": {"a$": "b"}}, f"tags key 'a$': '$' is not allowed; use {EC2_WORDS}"),
    (BODY | {"ami": "AMI-UPPER"}, "ami: 'A' is not allowed; use lowercase letters, digits, . and -, starting with a "
                                  "letter or digit (like amazon-linux-2023 or t3.micro)"),
    (BODY | {"tags": {"Name": "x"}}, "tags: tag key 'Name' is reserved (Name, ManagedBy, RequestId and aws:*)"),
])
def test_a_refused_value_says_which_characters_are_allowed_not_the_regex(client, stand_in, body, detail):
    response = client.post("/instances", json=body)
    assert response.status_code == 422
    assert response.json()["detail"] == f"Invalid request: {detail}."
    assert response.json()["errors"][0]["msg"] == detail.split(": ", 1)[1]
    assert "should match pattern" not in response.text and "[A-Za-z0-9" not in response.text
    assert "Value error" not in response.text
    assert stand_in.calls == []


def test_query_and_header_patterns_are_explained_too(client, stand_in):
    tag = client.get("/instances", params={"tag": "a$b"})
    assert tag.status_code == 422
    assert tag.json()["detail"] == (f"Invalid request: query tag[0]: '$' is not allowed; use Key=Value or Key, in "
                                    f"{EC2_WORDS} (no = in the key).")
    key = client.post("/instances", json=BODY, headers={"Idempotency-Key": "two words"})
    assert key.json()["detail"] == ("Invalid request: header Idempotency-Key: ' ' is not allowed; use printable "
                                    "ASCII characters without spaces.")
    many = client.post("/instances/actions", json={"action": "stop"})
    assert many.json()["detail"] == "Invalid request: give ids or selector (one of them, not null)."
    assert stand_in.calls == []


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "é"])
def test_a_malformed_idempotency_key_is_422(client, stand_in, key):
    response = client.post("/instances", json=BODY, headers={"Idempotency-Key": key.encode()})
    assert response.status_code == 422
    assert stand_in.calls == []


def test_create_is_201_and_a_replay_says_so(client, stand_in):
    first = client.post("/instances", json=BODY, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    stand_in.replayed = True
    again = client.post("/instances", json=BODY, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert stand_in.calls == [("create", "web-1", "k1")] * 2


@pytest.mark.parametrize("extra, named", [
    ({"storage": 20}, "unknown field storage (did you mean storage_gb?)"),  # was 201 with 8 GB
    ({"auto_stop_minute": 60}, "unknown field auto_stop_minute (did you mean auto_stop_minutes?)"),  # was the default
    ({"storage": 20, "colour": "red"}, "unknown fields storage (did you mean storage_gb?), colour"),
    ({"stop_when_idle": {"cpu_below": 5, "for_minutes": 60}},
     "unknown field stop_when_idle.cpu_below (did you mean cpu_below_percent?); missing field "
     "stop_when_idle.cpu_below_percent"),
])
def test_an_unknown_field_is_a_422_that_names_it(client, stand_in, extra, named):
    response = client.post("/instances", json=BODY | extra)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == f"Invalid request: {named}."
    assert response.json()["code"] == "validation_error"
    assert stand_in.calls == []


def test_several_missing_fields_are_named_in_one_answer(client, stand_in):
    response = client.post("/instances", json={"name": "web-1"})
    assert response.status_code == 422
    assert response.json()["detail"] == "Invalid request: missing fields ami, instance_type."
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "ami"], ["body", "instance_type"]]
    typo = client.post("/instances", json={"nme": "web-1", "ami": "amazon-linux-2023", "instance_type": "t3.micro",
                                           "tags": {"a$": "b"}})
    assert typo.json()["detail"] == ("Invalid request: unknown field nme (did you mean name?); missing field name; "
                                     "and 1 more problem (see errors).")
    assert stand_in.calls == []


@pytest.mark.parametrize("headers, got", [
    ({}, "this request has none"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, "this request's is 'application/x-www-form-urlencoded'"),
    ({"Content-Type": "text/plain"}, "this request's is 'text/plain'"),
])
@pytest.mark.parametrize("method, path", [("POST", "/instances"), ("PATCH", f"/instances/{KNOWN}"),
                                          ("POST", "/instances/actions")])
def test_a_json_body_without_its_content_type_says_to_send_the_header(client, stand_in, headers, got, method, path):
    response = client.request(method, path, content=b'{"name": "web-1"}', headers=headers)  # curl -d's default
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == ("Invalid request: send the body as JSON with the header Content-Type: "
                                         f"application/json ({got}).")
    assert stand_in.calls == []
    charset = client.post("/instances", json=BODY, headers={"Content-Type": "application/json; charset=utf-8"})
    assert charset.status_code == 201


def test_the_original_projects_create_body_is_still_201(client, stand_in):
    # What its clients send (its README, docs/API_REFERENCE.md and Jenkinsfile.create): all five fields.
    original = {"name": "web-server", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "storage_gb": 8,
                "create_security_group": True}
    response = client.post("/instances", json=original)
    assert response.status_code == 201, response.text
    assert stand_in.calls == [("create", "web-server", None)]


@pytest.mark.parametrize("method, path, action", [
    ("POST", "/start", "start"), ("POST", "/stop", "stop"), ("DELETE", "", "delete")])
def test_a_transition_is_202_when_asked_of_ec2_and_200_when_already_done(client, stand_in, method, path, action):
    assert client.request(method, f"/instances/{KNOWN}{path}").status_code == 202
    stand_in.changed = False
    assert client.request(method, f"/instances/{KNOWN}{path}").status_code == 200
    assert stand_in.calls == [(action, KNOWN)] * 2


@pytest.mark.parametrize("error, status, code, retry_after", [
    (PolicyViolation("not free", code="instance_type_not_allowed"), 400, "instance_type_not_allowed", None),
    (Conflict("busy", code="launch_in_progress", retry_after=5), 409, "launch_in_progress", "5"),
    (Conflict("wrong", code="wrong_state", aws_error_code="IncorrectInstanceState"), 409, "wrong_state", None),
    (UpstreamError("odd", code="aws_bad_output"), 502, "aws_bad_output", None),
    (Unavailable("later", code="record_failed", retry_after=5, extra={"instance_id": KNOWN}), 503,
     "record_failed", "5"),
    (UpstreamTimeout("slow"), 504, "aws_timeout", None),
    (sqlite3.OperationalError("database is locked"), 503, "store_unavailable", "5"),
    (RuntimeError("a bug with a secret in it"), 500, "internal_error", None),
])
@pytest.mark.parametrize("method, path", [("POST", "/instances"), ("POST", f"/instances/{KNOWN}/stop"),
                                          ("POST", "/instances/sync")])
def test_every_error_maps_to_the_envelope(client, stand_in, error, status, code, retry_after, method, path):
    stand_in.raises = error
    response = client.request(method, path, json=BODY)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and isinstance(body["detail"], str)
    assert response.headers.get("Retry-After") == retry_after
    assert "Traceback" not in response.text and "secret" not in response.text
    if getattr(error, "aws_error_code", None):
        assert body["aws_error_code"] == error.aws_error_code
    if code == "record_failed":
        assert body["instance_id"] == KNOWN


def test_sync_returns_what_the_reconciler_changed(client):
    assert client.post("/instances/sync").json() == {"adopted": [KNOWN], "updated": [], "gone": [], "missing": []}


def test_with_a_token_every_instances_route_needs_it(client, settings, stand_in):
    settings.api_token = SecretStr("t0ken-for-in-process-tests")
    assert client.get("/instances").status_code == 401
    assert client.post("/instances", json=BODY).status_code == 401
    assert client.get("/instances", headers={"Authorization": "Bearer t0ken-for-in-process-tests"}).status_code == 200
    assert client.get("/health").status_code == 200
    assert stand_in.calls == []


# -- one token per person (API_TOKENS_FILE): who sees and acts on what ----------------------------------------
ALICE, BOB, ROOT = "alice-token-0123456789abcdef", "bob-token-0123456789abcdef", "root-token-0123456789abcdef"
BOBS = "i-0b0b0b0b0b0b0b0b0"
ADOPTED = "i-0adadadadadadadad"


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def people(settings, store, tmp_path):
    """alice and bob (users), root (an admin); KNOWN is alice's, BOBS bob's, ADOPTED nobody's."""
    import hashlib

    path = tmp_path / "tokens.toml"
    path.write_text("".join(f'[[users]]\nname = "{n}"\nsha256 = "{hashlib.sha256(t.encode()).hexdigest()}"\n'
                            f'role = "{r}"\n' for n, t, r in (("alice", ALICE, "user"), ("bob", BOB, "user"),
                                                             ("root", ROOT, "admin"))))
    settings.api_tokens_file = path
    now = utcnow()
    store.update_instance(KNOWN, {"owner": "alice", "endpoint": settings.endpoint_key})
    for instance_id, owner in ((BOBS, "bob"), (ADOPTED, None)):
        store.upsert_instance({"id": instance_id, "name": f"of-{owner}", "state": InstanceState.RUNNING,
                               "public_ip": "203.0.113.10", "region": "us-east-1", "owner": owner,
                               "endpoint": settings.endpoint_key,
                               "created_at": now, "updated_at": now})
    return path


def test_a_user_lists_and_reads_only_their_own(client, people):
    assert client.get("/instances").status_code == 401
    listed = client.get("/instances", headers=as_(ALICE)).json()["instances"]
    assert [(i["id"], i["owner"]) for i in listed] == [(KNOWN, "alice")]
    assert [i["id"] for i in client.get("/instances?state=running", headers=as_(ALICE)).json()["instances"]] == [KNOWN]
    assert [i["id"] for i in client.get("/instances", headers=as_(BOB)).json()["instances"]] == [BOBS]
    everyone = client.get("/instances", headers=as_(ROOT)).json()["instances"]
    assert {i["id"]: i["owner"] for i in everyone} == {KNOWN: "alice", BOBS: "bob", ADOPTED: None}
    assert client.get(f"/instances/{KNOWN}", headers=as_(ALICE)).json()["owner"] == "alice"
    assert client.get(f"/instances/{KNOWN}/events", headers=as_(ALICE)).status_code == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/instances/{id}"), ("GET", "/instances/{id}/events"), ("GET", "/instances/{id}/metrics"),
    ("PATCH", "/instances/{id}"), ("DELETE", "/instances/{id}"), ("POST", "/instances/{id}/start"),
    ("POST", "/instances/{id}/stop"),
])
@pytest.mark.parametrize("instance_id", [BOBS, ADOPTED])
def test_someone_elses_instance_is_the_404_of_an_unknown_one(client, people, stand_in, method, path, instance_id):
    unknown = client.request(method, path.format(id="i-00000000000000000"), headers=as_(ALICE),
                             json={"name": "x"})
    theirs = client.request(method, path.format(id=instance_id), headers=as_(ALICE), json={"name": "x"})
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == {**unknown.json(), "detail": unknown.json()["detail"].replace(
        "i-00000000000000000", instance_id)}
    assert stand_in.calls == []


def test_an_admin_acts_on_anyones_and_the_actor_is_passed_on(client, people, stand_in):
    assert client.post(f"/instances/{KNOWN}/stop", headers=as_(ALICE)).status_code == 202
    assert client.post(f"/instances/{BOBS}/stop", headers=as_(ROOT)).status_code == 202
    assert client.delete(f"/instances/{ADOPTED}", headers=as_(ROOT)).status_code == 202
    assert stand_in.calls == [("stop", KNOWN), ("stop", BOBS), ("delete", ADOPTED)]
    assert stand_in.actors == ["alice", "root", "root"]


def test_server_wide_routes_are_an_admins(client, people):
    for path in ("/notifications", "/metrics"):
        refused = client.get(path, headers=as_(ALICE))
        assert refused.status_code == 403 and refused.json()["code"] == "admin_only", path
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=as_(ROOT)).status_code == 200


def test_inventory_and_budget_show_a_user_their_own_instances(client, people, stand_in):
    from types import SimpleNamespace

    stand_in.account_plan = SimpleNamespace(cached=lambda: (None, None))
    stand_in.spending = Spending(5.0, PriceBook.load(DEFAULT_PRICES_FILE), stand_in.store, "us-east-1",
                                 "http://127.0.0.1:9")
    hosts = client.get("/inventory", headers=as_(ALICE)).json()["_meta"]["hostvars"]
    assert list(hosts) == [KNOWN]
    assert set(client.get("/inventory", headers=as_(ROOT)).json()["_meta"]["hostvars"]) == {KNOWN, BOBS, ADOPTED}
    mine = client.get("/budget", headers=as_(ALICE)).json()
    everyone = client.get("/budget", headers=as_(ROOT)).json()
    assert [i["id"] for i in mine["instances"]] == [KNOWN]
    assert {i["id"] for i in everyone["instances"]} == {KNOWN, BOBS, ADOPTED}
    # The budget is the account's: a user sees the totals their next create is admitted against.
    assert mine["committed_usd"] == everyone["committed_usd"] and mine["remaining_usd"] == everyone["remaining_usd"]


def test_api_token_stays_the_admin_beside_the_file(client, settings, people, stand_in):
    settings.api_token = SecretStr("t0ken-for-in-process-tests")
    assert len(client.get("/instances", headers=as_("t0ken-for-in-process-tests")).json()["instances"]) == 3
    assert client.post(f"/instances/{BOBS}/stop", headers=as_("t0ken-for-in-process-tests")).status_code == 202
    assert stand_in.actors == ["admin"]
    assert client.get("/instances", headers=as_(ALICE)).status_code == 200


def test_the_file_is_re_read_and_a_broken_one_refuses_its_tokens(client, settings, people):
    text = people.read_text()
    people.write_text(text.replace('name = "bob"', 'name = "robert"'))
    assert client.get("/instances", headers=as_(BOB)).json() == {"instances": []}  # robert owns nothing
    people.write_text(text + "[[users]]\n")  # half an entry
    broken = client.get("/instances", headers=as_(ALICE))
    assert broken.status_code == 503 and broken.json()["code"] == "tokens_file_invalid"
    assert str(people) not in broken.text
    settings.api_token = SecretStr("t0ken-for-in-process-tests")  # API_TOKEN still gets in
    assert client.get("/instances", headers=as_("t0ken-for-in-process-tests")).status_code == 200
    people.write_text(text)
    assert client.get("/instances", headers=as_(ALICE)).status_code == 200
