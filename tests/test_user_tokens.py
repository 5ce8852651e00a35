"""One token per person (API_TOKENS_FILE) through the real server, the AWS_CLI shim and the emulator: alice
cannot see or stop bob's instance, the admin can, and every event names who asked for it."""

import hashlib
import subprocess

import httpx
import pytest

from tests.support.configmap import publish
from tests.support.processes import ROOT, wait_until
from tests.support.server import ApiServer, aws_error

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef",
          "root": "root-token-0123456789abcdef"}
ROLES = {"alice": "user", "bob": "user", "root": "admin"}
# No SSH rule (ssh_from none): one `aws` process less per create, and no test here is about SSH.
BODY = {"name": "bobs-box", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "ssh_from": "none"}


def tokens_toml(people: dict[str, str]) -> str:
    return "".join(f'[[users]]\nname = "{name}"\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
                   f'role = "{ROLES.get(name, "user")}"\n\n' for name, token in people.items())


@pytest.fixture(scope="module")
def people_server(emulator, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("people")
    # Mounted the way Kubernetes mounts a ConfigMap: tokens.toml -> ..data/tokens.toml, ..data -> ..<version>.
    path = publish(tmp / "config", tokens_toml(TOKENS))
    path.chmod(0o600)
    server = ApiServer(tmp, emulator.url, API_TOKENS_FILE=str(path))
    server.tokens_file = path  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def as_(people_server):
    """as_("alice") is an httpx client sending alice's token. No emulator reset nor sync first (an `aws` process
    a test): each test looks only at the instances it creates, and a user sees (and a sync of theirs names) only
    their own; instances left by other tests are someone else's or nobody's (seen by admins only)."""
    people_server.set_faults()
    clients: list[httpx.Client] = []

    def client(name: str) -> httpx.Client:
        made = httpx.Client(base_url=people_server.url, timeout=60,
                            headers={"Authorization": f"Bearer {TOKENS[name]}"})
        clients.append(made)
        return made

    yield client
    for made in clients:
        made.close()
    people_server.set_faults()


@pytest.fixture(scope="module")
def bobs_create(people_server) -> dict:
    """bob's create, sent once with an Idempotency-Key: the instance alice cannot see or stop (and the admin can),
    and the key alice cannot reuse, instead of a create each (its group, its launch)."""
    with httpx.Client(base_url=people_server.url, timeout=60,
                      headers={"Authorization": f"Bearer {TOKENS['bob']}"}) as bob:
        created = bob.post("/instances", json=BODY, headers={"Idempotency-Key": "shared-key-1"})
    assert created.status_code == 201, created.text
    return created.json()


def test_alice_cannot_see_or_stop_bobs_instance_and_the_admin_can(people_server, as_, emulator, bobs_create):
    alice, bob, root = as_("alice"), as_("bob"), as_("root")
    bobs = bobs_create["id"]
    assert bobs_create["owner"] == "bob"
    wait_until(lambda: bob.get(f"/instances/{bobs}").json()["state"] == "running")

    # alice: not listed, and every route on it is the 404 of an id nobody tracks; nothing reaches EC2.
    mark = len(people_server.aws_calls())
    assert alice.get("/instances").json() == {"instances": []}
    assert alice.get("/instances", params={"include_terminated": "true", "name": "bobs-box"}).json() == {
        "instances": []}
    unknown = alice.get("/instances/i-00000000000000000").json()
    for method, path in (("GET", ""), ("GET", "/events"), ("GET", "/metrics"), ("POST", "/stop"),
                         ("POST", "/start"), ("DELETE", ""), ("PATCH", "")):
        response = alice.request(method, f"/instances/{bobs}{path}", json={"name": "mine-now"})
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == unknown["code"] == "instance_not_found"
        assert response.json()["detail"] == unknown["detail"].replace("i-00000000000000000", bobs)
    by_id = alice.post("/instances/actions", json={"action": "stop", "ids": [bobs]}).json()["results"]
    assert [(r["id"], r["status"], r["state"], r["error"]["code"]) for r in by_id] == [
        (bobs, 404, None, "instance_not_found")]
    by_selector = alice.post("/instances/actions", json={"action": "stop", "selector": {"name": "bobs-box"}})
    assert by_selector.json()["results"] == []
    assert alice.get("/inventory").json()["_meta"]["hostvars"] == {}
    assert [i["id"] for i in alice.get("/budget").json()["instances"]] == []
    assert alice.get("/notifications").status_code == 403
    assert people_server.mutations_since(mark) == []  # no `aws` process spawned for alice
    assert emulator.instances()[bobs]["State"]["Name"] == "running"

    # root, an admin: lists it (owned by bob) and stops it.
    listed = {i["id"]: i for i in root.get("/instances").json()["instances"]}
    assert listed[bobs]["owner"] == "bob"
    assert bobs in root.get("/inventory").json()["_meta"]["hostvars"]
    stopped = root.post(f"/instances/{bobs}/stop")
    assert stopped.status_code == 202, stopped.text
    assert [c for c in people_server.mutations_since(mark) if "stop-instances" in c]
    wait_until(lambda: emulator.instances()[bobs]["State"]["Name"] == "stopped")

    # The history says who did what; bob sees it too.
    events = bob.get(f"/instances/{bobs}/events").json()["events"]
    assert [(e["action"], e["source"], e["actor"]) for e in events if e["source"] == "api"] == [
        ("create", "api", "bob"), ("stop", "api", "root")]
    assert all(e["actor"] is None for e in events if e["source"] != "api")  # the reconciler's own observations
    assert bob.get(f"/instances/{bobs}").json()["state"] in ("stopping", "stopped")
    # bob starts it again himself; a selector of his matches only his own.
    mine = bob.post("/instances/actions", json={"action": "start", "selector": {"name": "bobs-box"}}).json()
    assert [(r["id"], r["status"]) for r in mine["results"]] == [(bobs, 202)]


def test_an_idempotency_key_is_its_owners(people_server, as_, emulator, bobs_create):
    alice, bob = as_("alice"), as_("bob")
    key = {"Idempotency-Key": "shared-key-1"}  # bob's create was sent with it (bobs_create)
    mark = len(people_server.aws_calls())
    theirs = alice.post("/instances", json=BODY, headers=key)
    assert theirs.status_code == 409 and theirs.json()["code"] == "idempotency_key_reused"
    assert bobs_create["id"] not in theirs.text
    assert people_server.mutations_since(mark) == []  # nothing launched for alice
    again = bob.post("/instances", json=BODY, headers=key)
    assert again.status_code == 201 and again.json()["id"] == bobs_create["id"]
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_launch_resolved_by_a_sweep_keeps_its_owner(people_server, as_, emulator):
    alice, bob = as_("alice"), as_("bob")
    # EC2 launches, then answers with an error: the launch stays pending until a sweep finds its instance.
    people_server.set_faults({"op": "run-instances", "times": 1, "fail_after": aws_error(
        "InternalError", "RunInstances", "An internal error has occurred.")})
    response = bob.post("/instances", json=BODY | {"name": "unsure"})
    assert response.status_code == 503, response.text
    # alice's sync finds it (the launch's RequestId tag): recorded as bob's, and not named to her.
    synced = alice.post("/instances/sync").json()
    assert synced == {"adopted": [], "updated": [], "gone": [], "missing": []}
    found = wait_until(lambda: [i for i in bob.get("/instances").json()["instances"] if i["name"] == "unsure"])
    assert found[0]["owner"] == "bob"
    assert alice.get("/instances").json() == {"instances": []}
    events = bob.get(f"/instances/{found[0]['id']}/events").json()["events"]
    assert (events[0]["action"], events[0]["actor"]) == ("create", "bob")


def test_add_user_sh_adds_a_person_without_a_restart(people_server):
    added = subprocess.run([str(ROOT / "scripts" / "add_user.sh"), "carol", "--file",
                            str(people_server.tokens_file)], capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    carol = added.stdout.strip()
    assert carol not in people_server.tokens_file.read_text()
    with httpx.Client(base_url=people_server.url, timeout=60, headers={"Authorization": f"Bearer {carol}"}) as api:
        assert api.get("/instances").json() == {"instances": []}  # a user, with nothing of her own yet
        assert api.get("/notifications").status_code == 403
        # Revoked by deleting her entry: refused at once.
        people_server.tokens_file.write_text(tokens_toml(TOKENS))
        assert api.get("/instances").status_code == 401
    assert carol not in people_server.server_log()
    alice = httpx.get(f"{people_server.url}/instances", headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    assert alice.status_code == 200, alice.text


def test_a_configmap_update_revokes_at_once_and_keeps_everyone_else_in(people_server):
    # Each update swaps ..data to a new version and deletes the old one: the server follows the path as given.
    dave = "dave-token-0123456789abcdef"
    publish(people_server.tokens_file.parent, tokens_toml(TOKENS | {"dave": dave}))
    with httpx.Client(base_url=people_server.url, timeout=60, headers={"Authorization": f"Bearer {dave}"}) as api:
        assert api.get("/instances").status_code == 200
        publish(people_server.tokens_file.parent, tokens_toml(TOKENS))  # dave revoked
        assert api.get("/instances").status_code == 401
    alice = httpx.get(f"{people_server.url}/instances", headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    assert alice.status_code == 200, alice.text  # never 503: the deleted old version is not read


def test_every_route_needs_a_known_token(people_server):
    for auth in (None, "Bearer wrong-token-0123456789", f"Bearer {TOKENS['alice']}x",
                 f"Bearer {hashlib.sha256(TOKENS['alice'].encode()).hexdigest()}"):
        headers = {"Authorization": auth} if auth else {}
        for path in ("/instances", "/budget", "/inventory", "/notifications", "/metrics"):
            response = httpx.get(people_server.url + path, headers=headers)
            assert response.status_code == 401, (auth, path, response.text)
    assert httpx.get(f"{people_server.url}/health").status_code == 200
    # Tokens per person protect the server like API_TOKEN: the browser rules of a tokenless server are off.
    response = httpx.get(f"{people_server.url}/instances", headers={
        "Authorization": f"Bearer {TOKENS['root']}", "Host": "ec2.example.org", "X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 200
    for token in TOKENS.values():
        assert token not in people_server.server_log()
        assert token.encode() not in people_server.db_path.read_bytes()
