"""REST contract suite: the real server process, the real bash scripts and `aws`, a real moto server.

One server for the module (conftest's api_server) and EC2 as the module's earlier tests left it: no test here
depends on an empty EC2 (each looks at the instances it made or seeded, by id or name), so none resets it. A
reset made every instance of the tests before it vanish, and the next sync paid for that: a lookup to prove them
gone and a delete-security-group for each of their groups (issue 26). Creates are shared where the tests of one
body only read what it made: `made` (the default create: its answer, cost, address and events) and
`creates_at_once` (four creates sent at once while /health is asked: the alias, AMI-id, root-volume and
security-group tests' creates, and the load of the health test). Fixtures in conftest.py and below.
"""

import threading
from dataclasses import dataclass

import httpx
import pytest

from tests.support.emulator import KEY_NAME
from tests.support.processes import TLS, wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer

X86_TYPE = "t3.micro"
ARM_TYPE = "t4g.micro"


@pytest.fixture
def client(reader):
    """conftest's `reader`: no faults injected, no emulator reset and no sync (a test that needs the record caught
    up on instances it seeded syncs: seeded())."""
    return reader


def create(api: httpx.Client, **overrides) -> httpx.Response:
    body = {"name": "web-1", "ami": "amazon-linux-2023", "instance_type": X86_TYPE} | overrides
    return api.post("/instances", json=body)


def created(api: httpx.Client, **overrides) -> dict:
    response = create(api, **overrides)
    assert response.status_code == 201, response.text
    return response.json()


def state_in_api(api: httpx.Client, instance_id: str) -> str | None:
    return api.get(f"/instances/{instance_id}").json().get("state")


def seeded(api: httpx.Client, emulator, *names: str) -> list[str]:
    """Running instances the server tracks, one a name, for a test whose subject is not the create: launched in
    the emulator and adopted by a sync (tests/support/seeding.py; the create tests above test creating)."""
    ids = [box for name in names for box in launch_managed(emulator, name=name, instance_type=X86_TYPE)]
    adopt(api, ids)
    return ids


@dataclass
class Made:
    item: dict  # the create's answer
    mutations: list[list[str]]  # the `aws` processes it spawned that were not background reads


@pytest.fixture(scope="module")
def made(api_server) -> Made:
    """One create with the defaults (and two tags), made once for the tests of what a create answers, costs and
    leads to (its answer and EC2's instance, its `aws` processes, the sweep filling in its address, its events):
    each of them was a create of its own with the same body, four `aws` processes each. They read it;
    test_events_record_each_state_change stops it, and comes after them in this file."""
    api_server.set_faults()
    with httpx.Client(base_url=api_server.url, timeout=60, verify=TLS) as client:
        before = len(api_server.aws_calls())
        item = created(client, name="web-1", tags={"Owner": "me", "Env": "dev"})
        return Made(item, api_server.mutations_since(before))


@dataclass
class AtOnce:
    answers: dict[str, httpx.Response]  # by name
    health_during: list[int]  # the status of each GET /health sent while they ran


@pytest.fixture(scope="module")
def creates_at_once(api_server, emulator) -> AtOnce:
    """Four creates sent at once, /health asked over and over while they run: the creates the tests of a graviton
    type's alias, an AMI id with a bigger root volume, and create_security_group: true (two groups) each made on
    its own before, now the load of test_health_answers_while_creates_run (four creates without an SSH rule
    before: two here have one, more work for the server while it answers). Each test reads its own answer."""
    api_server.set_faults()
    bodies = {
        "graviton": {"instance_type": ARM_TYPE, "ssh_from": "none"},  # SSH is not the subject
        "by-ami-id": {"ami": emulator.ami(), "storage_gb": 20, "ssh_from": "none"},
        # Every field the original project's clients send (its Jenkinsfile.create, API_REFERENCE.md).
        "web-server": {"storage_gb": 8, "create_security_group": True},
        "web-2": {"create_security_group": True},
    }
    answers: dict[str, httpx.Response] = {}

    def one(name: str) -> None:
        with httpx.Client(base_url=api_server.url, timeout=60, verify=TLS) as each:
            answers[name] = create(each, name=name, **bodies[name])

    threads = [threading.Thread(target=one, args=(name,)) for name in bodies]
    for t in threads:
        t.start()
    health_during = []
    with httpx.Client(base_url=api_server.url, timeout=60, verify=TLS) as client:
        while any(t.is_alive() for t in threads):
            health_during.append(client.get("/health").status_code)
    for t in threads:
        t.join()
    return AtOnce(answers, health_during)


def answer(at_once: AtOnce, name: str) -> dict:
    response = at_once.answers[name]
    assert response.status_code == 201, response.text
    return response.json()


# -- health and docs ---------------------------------------------------------------------------
def test_health_is_exactly_ok(reader):
    response = reader.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_lists_every_seed_route(reader):
    paths = reader.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths["/instances"])
    assert {"get", "delete"} <= set(paths["/instances/{instance_id}"])
    assert "post" in paths["/instances/{instance_id}/start"]
    assert "post" in paths["/instances/{instance_id}/stop"]


def test_docs_page_uses_no_cdn(reader):
    html = reader.get("/docs").text
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    js = reader.get("/static-offline-docs/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000


# -- create ------------------------------------------------------------------------------------
def test_create_answers_at_once_with_the_resolved_ami_and_tags_in_ec2(made, emulator):
    item = made.item
    assert item["id"].startswith("i-")
    assert item["state"] in ("pending", "running")
    expected_ami = emulator.ami()
    assert item["ami"] == expected_ami
    assert item["instance_type"] == X86_TYPE
    assert item["storage_gb"] == 8
    assert item["security_group_id"] and item["ssh_from"] == "127.0.0.1/32"  # sandbox my_ip: the request's address
    assert item["login_user"] == "ec2-user"
    assert item["tags"] == {"Owner": "me", "Env": "dev"}
    assert item["backend_used"] == "awscli"
    assert item["created_at"] and item["updated_at"]

    ec2 = emulator.instances()[item["id"]]
    tags = {t["Key"]: t["Value"] for t in ec2["Tags"]}
    assert tags["Name"] == "web-1" and tags["ManagedBy"] == "ec2-creator-local"
    assert tags["Owner"] == "me" and tags["Env"] == "dev" and tags["RequestId"]
    assert ec2["KeyName"] == KEY_NAME
    assert ec2["ImageId"] == expected_ami


def test_create_uses_the_amis_root_device_gp3_and_size(creates_at_once, emulator):
    item = answer(creates_at_once, "by-ami-id")  # storage_gb 20
    ec2 = emulator.instances()[item["id"]]
    mappings = ec2["BlockDeviceMappings"]
    assert [m["DeviceName"] for m in mappings] == ["/dev/xvda"]
    volume = emulator.ec2.describe_volumes(VolumeIds=[mappings[0]["Ebs"]["VolumeId"]])["Volumes"][0]
    assert volume["Size"] == 20 and volume["VolumeType"] == "gp3"
    assert item["storage_gb"] == 20


def test_reconciler_fills_state_public_ip_and_ssh_string(client, made):
    item = made.item
    done = wait_until(lambda: (r := client.get(f"/instances/{item['id']}").json())["state"] == "running" and r)
    assert done["public_ip"]
    assert done["ssh_string"] == f"ssh -i ~/.ssh/my_ec2_keypair.pem ec2-user@{done['public_ip']}"


def test_arm_alias_on_a_graviton_type(creates_at_once, emulator):
    item = answer(creates_at_once, "graviton")  # amazon-linux-2023 on a t4g
    assert item["ami"] == emulator.ami("al2023-ami-kernel-default-arm64")


def test_create_with_an_ami_id_an_alias_resolves_to(creates_at_once, emulator):
    ami = emulator.ami()
    assert answer(creates_at_once, "by-ami-id")["ami"] == ami


def test_create_costs_three_aws_processes_and_reads_none(client, api_server, made):
    # The server's catalogue is warm from its start (a copy of the run's: tests/support/server.py); were it not,
    # fetching it would be background reads, which mutations_since leaves out.
    before = len(api_server.aws_calls())
    client.get("/instances")
    client.get(f"/instances/{made.item['id']}")
    mutations = made.mutations + api_server.mutations_since(before)
    # Its own security group, its SSH rule, the launch (issue 25: SSH that works, not open to the world).
    assert [next(op for op in ("create-security-group", "authorize-security-group-ingress", "run-instances")
                 if op in m) for m in mutations] == ["create-security-group", "authorize-security-group-ingress",
                                                      "run-instances"]


def test_create_security_group_true_means_ssh_from_ssh_ingress_cidr_in_a_group_of_its_own(creates_at_once, emulator):
    # The first with every field the original project's clients send (its Jenkinsfile.create, API_REFERENCE.md).
    first = answer(creates_at_once, "web-server")
    second = answer(creates_at_once, "web-2")
    assert first["ssh_from"] == second["ssh_from"] == "0.0.0.0/0"  # SSH_INGRESS_CIDR's default, as asked
    assert first["security_group_id"] and first["security_group_id"] != second["security_group_id"]
    group = emulator.ec2.describe_security_groups(GroupIds=[first["security_group_id"]])["SecurityGroups"][0]
    assert [(r["FromPort"], r["ToPort"], [ip["CidrIp"] for ip in r["IpRanges"]]) for r in group["IpPermissions"]] \
        == [(22, 22, ["0.0.0.0/0"])]
    ec2 = emulator.instances()[first["id"]]
    assert first["security_group_id"] in [g["GroupId"] for g in ec2["SecurityGroups"]]


# -- free tier: 400, nothing spawned, nothing launched -----------------------------------------
@pytest.mark.parametrize("overrides, code", [
    ({"instance_type": "t2.large"}, "instance_type_not_allowed"),
    ({"instance_type": "m5.24xlarge"}, "instance_type_not_allowed"),
    ({"storage_gb": 31}, "storage_not_free_tier"),
    ({"storage_gb": 7}, "storage_not_free_tier"),
    ({"ami": "ami-0123456789abcdef0"}, "ami_not_free_tier"),
    ({"ami": "windows-2022"}, "ami_not_free_tier"),
    ({"ami": "ubuntu-24.04"}, "ami_alias_unavailable"),  # moto publishes no Ubuntu parameters
])
def test_free_tier_violations_are_400_and_spawn_nothing(reader, api_server, emulator, overrides, code):
    # Refused before any `aws` process (the server's AMI catalogue is warm from its start): nothing in EC2 to
    # reset or sync. No reset: a sweep may still delete the group of an instance an earlier test deleted.
    before = len(api_server.aws_calls())
    response = create(reader, name="bad", **overrides)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert response.json()["detail"]
    mutations = api_server.mutations_since(before, ignore_tidying=True)
    assert mutations == []
    names = [{t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("Name") for i in emulator.instances().values()]
    assert "bad" not in names


def test_sandbox_refusals_name_the_sandbox_and_suggest_only_what_it_resolves(reader):
    api = reader  # refused before any launch: nothing in EC2 to reset or sync
    alias = create(api, name="bad", ami="ubuntu-24.04").json()["detail"]
    assert "local sandbox" in alias and "Amazon Linux" in alias and "this region" not in alias
    assert "ubuntu" not in alias.split("try ", 1)[1] and "amazon-linux-2023" in alias.split("try ", 1)[1]
    unknown = create(api, name="bad", ami="windows-2022").json()["detail"]
    assert "local sandbox" in unknown and "amazon-linux-2023" in unknown
    assert "ubuntu" not in unknown and "debian" not in unknown  # aliases this target cannot resolve


def test_arm64_ami_on_x86_type_is_400(reader, emulator):
    response = create(reader, ami=emulator.ami("al2023-ami-kernel-default-arm64"), instance_type=X86_TYPE)
    assert response.status_code == 400
    assert response.json()["code"] == "architecture_mismatch"


@pytest.mark.parametrize("body", [
    {},
    {"name": "x", "ami": "amazon-linux-2023"},
    {"name": "", "ami": "amazon-linux-2023", "instance_type": X86_TYPE},
    {"name": "x", "ami": "amazon-linux-2023", "instance_type": X86_TYPE, "storage_gb": "lots"},
    {"name": "x", "ami": "amazon-linux-2023", "instance_type": X86_TYPE, "tags": {"aws:owner": "me"}},
    {"name": "x", "ami": "amazon-linux-2023", "instance_type": X86_TYPE, "tags": {"ManagedBy": "me"}},
    {"name": "x", "ami": "amazon-linux-2023", "instance_type": X86_TYPE, "storage": 20},  # unknown: not ignored
])
def test_schema_errors_are_422_in_the_envelope(reader, body):
    response = reader.post("/instances", json=body)
    assert response.status_code == 422
    payload = response.json()
    assert isinstance(payload["detail"], str) and payload["code"] == "validation_error"
    assert payload["errors"]


# -- list / get --------------------------------------------------------------------------------
def test_list_leaves_out_terminated_unless_asked(client, emulator):
    keep, gone = seeded(client, emulator, "keep", "gone")
    # Terminated outside the API and seen by a sync: how it ended is not the subject (the lifecycle test's delete).
    emulator.ec2.terminate_instances(InstanceIds=[gone])
    adopt(client, [gone], state="terminated")
    listed = {i["id"] for i in client.get("/instances").json()["instances"]}
    assert keep in listed and gone not in listed
    everything = {i["id"] for i in client.get("/instances", params={"include_terminated": "true"}).json()["instances"]}
    assert {keep, gone} <= everything


@pytest.mark.parametrize("method, path", [
    ("GET", "/instances/i-0123456789abcdef0"),
    ("POST", "/instances/i-0123456789abcdef0/start"),
    ("POST", "/instances/i-0123456789abcdef0/stop"),
    ("DELETE", "/instances/i-0123456789abcdef0"),
    ("GET", "/instances/i-0123456789abcdef0/events"),
    ("GET", "/instances/not-an-id"),
    ("DELETE", "/instances/..%2F..%2Fetc"),
])
def test_unknown_id_is_404_on_every_route(reader, api_server, method, path):
    before = len(api_server.aws_calls())
    response = reader.request(method, path)
    assert response.status_code == 404
    assert response.json()["code"] in ("instance_not_found", "not_found")
    assert api_server.mutations_since(before) == []


# -- lifecycle ---------------------------------------------------------------------------------
def test_stop_start_delete_lifecycle(client, emulator):
    [instance_id] = seeded(client, emulator, "web-1")  # running

    stop = client.post(f"/instances/{instance_id}/stop")
    assert stop.status_code == 202 and stop.json()["state"] in ("stopping", "stopped")
    assert emulator.instances()[instance_id]["State"]["Name"] == "stopped"
    wait_until(lambda: state_in_api(client, instance_id) == "stopped")
    assert client.get(f"/instances/{instance_id}").json()["public_ip"] is None

    again = client.post(f"/instances/{instance_id}/stop")
    assert again.status_code == 200 and again.json()["state"] == "stopped"

    start = client.post(f"/instances/{instance_id}/start")
    assert start.status_code == 202 and start.json()["state"] in ("pending", "running")
    wait_until(lambda: state_in_api(client, instance_id) == "running")
    assert client.post(f"/instances/{instance_id}/start").status_code == 200

    delete = client.delete(f"/instances/{instance_id}")
    assert delete.status_code == 202 and delete.json()["state"] in ("shutting-down", "terminated")
    assert emulator.instances()[instance_id]["State"]["Name"] == "terminated"
    wait_until(lambda: state_in_api(client, instance_id) == "terminated")

    for action in ("start", "stop"):
        conflict = client.post(f"/instances/{instance_id}/{action}")
        assert conflict.status_code == 409 and conflict.json()["code"] == "wrong_state"
    assert client.delete(f"/instances/{instance_id}").status_code == 200
    assert client.get(f"/instances/{instance_id}").json()["state"] == "terminated"


def test_events_record_each_state_change(client, made):
    item = made.item  # stopped here: after the other tests of this create
    wait_until(lambda: state_in_api(client, item["id"]) == "running")
    client.post(f"/instances/{item['id']}/stop")
    events = client.get(f"/instances/{item['id']}/events").json()["events"]
    assert events[0]["action"] == "create" and events[0]["source"] == "api" and events[0]["from_state"] is None
    # "running" is seen by a sweep (which may even be the first to see the new instance).
    assert any(e["to_state"] == "running" for e in events)
    assert events[-1]["action"] == "stop" and events[-1]["from_state"] == "running"


# -- convergence with EC2 ---------------------------------------------------------------------
@pytest.fixture
def looping_api(emulator, tmp_path, database_env):
    """A server whose periodic sweep runs every second (the module's server sweeps only when asked)."""
    server = ApiServer(tmp_path, emulator.url, RECONCILE_INTERVAL_SECONDS="1", **database_env)
    try:  # no sync asked: what the test waits for, the periodic sweep does
        with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as client:
            yield client
    finally:
        server.stop()


def test_changes_made_outside_the_api_show_up(looping_api, emulator):
    api = looping_api
    [instance_id] = launch_managed(emulator, name="web-1", instance_type=X86_TYPE)  # running
    wait_until(lambda: state_in_api(api, instance_id) == "running")  # adopted by a periodic sweep
    emulator.ec2.stop_instances(InstanceIds=[instance_id])
    wait_until(lambda: state_in_api(api, instance_id) == "stopped")
    emulator.ec2.terminate_instances(InstanceIds=[instance_id])
    wait_until(lambda: state_in_api(api, instance_id) == "terminated")


def test_sync_adopts_tagged_instances_and_ignores_untagged(client, emulator):
    ami = emulator.ami()
    [tagged] = launch_managed(emulator, name="by-hand", instance_type=X86_TYPE)
    untagged = emulator.ec2.run_instances(ImageId=ami, InstanceType=X86_TYPE, MinCount=1,
                                                MaxCount=1)["Instances"][0]["InstanceId"]
    result = client.post("/instances/sync").json()  # the background sweep may have adopted it already
    assert untagged not in result["adopted"]
    adopted = client.get(f"/instances/{tagged}").json()
    assert client.get(f"/instances/{tagged}/events").json()["events"][0]["source"] == "adopt"
    assert adopted["name"] == "by-hand" and adopted["ami"] == ami and adopted["instance_type"] == X86_TYPE
    assert client.get(f"/instances/{untagged}").status_code == 404
    assert untagged in emulator.instances() and \
        emulator.instances()[untagged]["State"]["Name"] == "running"


# -- non-blocking ------------------------------------------------------------------------------
def test_health_answers_while_creates_run(creates_at_once):
    # No warm-up create: the server's AMI catalogue is warm from its start (a copy of the run's). The four creates
    # (creates_at_once) are those of the alias, AMI-id and security-group tests above.
    assert [r.status_code for r in creates_at_once.answers.values()] == [201] * 4
    health_during = creates_at_once.health_during
    assert health_during and set(health_during) == {200}


# -- AWS failures map to clear codes -----------------------------------------------------------
def test_missing_key_pair_is_400_with_the_fix(client, emulator):
    emulator.ec2.delete_key_pair(KeyName=KEY_NAME)
    try:
        response = create(client, name="no-key", ssh_from="none")  # EC2 refuses the launch, whatever the rule
    finally:
        emulator.ec2.create_key_pair(KeyName=KEY_NAME)  # module fixtures elsewhere share the emulator
    body = response.json()
    assert response.status_code == 400, response.text
    assert body["code"] == "key_pair_missing" and body["aws_error_code"] == "InvalidKeyPair.NotFound"
    assert "create-key-pair" in body["detail"]
