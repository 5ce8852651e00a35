"""SSH that works and is not open to the world (issue 25): the real server, scripts, `aws` and moto, with
MY_IP_URL served by a local HTTP server (checkip's answer: a documentation-range address)."""


import httpx
import pytest

from tests.support.checkip import CheckIp
from tests.support.processes import TLS, wait_until
from tests.support.server import ApiServer, aws_error

BODY = {"name": "web-1", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}


@pytest.fixture(scope="module")
def checkip():
    served = CheckIp()
    yield served
    served.close()


@pytest.fixture(scope="module")
def api_server(emulator, tmp_path_factory, checkip):
    server = ApiServer(tmp_path_factory.mktemp("ssh_access"), emulator.url, MY_IP_URL=checkip.url)
    yield server
    server.stop()


@pytest.fixture
def client(reader) -> httpx.Client:
    """conftest's `reader`: the emulator is not reset and nothing is synced first (a reset and a sync cost an
    `aws` process a test): each test judges only the instances and groups it names, never a count of everything
    in EC2. No faults are injected until a test sets them."""
    return reader


@pytest.fixture(scope="module")
def created(api_server, emulator) -> dict:
    """One create with SSH from my_ip, and what EC2 and the shim showed right after it: the subject of
    test_my_ip_is_a_slash_32..., and then the `target` of the tests that change its rule (a create costs four
    `aws` processes; the two used to be one create each). Seen here, before any test changes the rule."""
    with httpx.Client(base_url=api_server.url, timeout=60, verify=TLS) as made:
        before = len(api_server.aws_calls())
        response = made.post("/instances", json=BODY)
        assert response.status_code == 201, response.text
        item = response.json()
        mutations = api_server.mutations_since(before)
        group_id = item["security_group_id"]
        done = wait_until(lambda: (r := made.get(f"/instances/{item['id']}").json())["public_ip"] and r)
    return {"item": item, "mutations": mutations, "groups": group_of(emulator, item["id"]),
            "rules": ssh_rules(emulator, group_id), "done": done,
            "group": emulator.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0],
            "ec2_tags": {t["Key"]: t["Value"] for t in emulator.instances()[item["id"]]["Tags"]}}


@pytest.fixture(scope="module")
def target(created) -> dict:
    """The instance with a group of its own (created with SSH from my_ip) for the tests that change its rule. Each
    test first puts the rule it starts from (nothing sent when that is the rule in force)."""
    return created["item"]


@pytest.fixture(scope="module")
def closed(api_server, emulator) -> dict:
    """One create with no SSH rule and no public IPv4, and its group's rules right after it: a subject of
    test_ssh_from_a_cidr_or_none..., then the instance whose group test_the_group_is_deleted... sees deleted (the
    group, not its rule, is that one's subject; it used to create one more)."""
    with httpx.Client(base_url=api_server.url, timeout=60, verify=TLS) as made:
        item = made.post("/instances", json=BODY | {"name": "closed", "ssh_from": "none",
                                                    "associate_public_ip": False}).json()
    return {"item": item, "rules": ssh_rules(emulator, item["security_group_id"])}


@pytest.fixture(scope="module")
def cidr(api_server) -> dict:
    """One create with SSH from a CIDR: a subject of test_ssh_from_a_cidr_or_none..., then the instance whose rule
    test_a_failed_revoke... changes (it starts from this rule: a PUT of it sent one `aws` process more)."""
    with httpx.Client(base_url=api_server.url, timeout=60, verify=TLS) as made:
        return made.post("/instances", json=BODY | {"ssh_from": "198.51.100.4"}).json()


def group_of(emulator, instance_id: str) -> list[str]:
    """The instance's groups as EC2 shows them (moto lists them under the interface when it has one)."""
    ec2 = emulator.instances()[instance_id]
    groups = ec2.get("SecurityGroups") or ec2["NetworkInterfaces"][0]["Groups"]
    return [g["GroupId"] for g in groups]


def ssh_rules(emulator, group_id: str) -> list[tuple[int, int, list[str]]]:
    group = emulator.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return [(r["FromPort"], r["ToPort"], [ip["CidrIp"] for ip in r["IpRanges"]]) for r in group["IpPermissions"]]


def test_my_ip_is_a_slash_32_in_a_group_of_its_own_tagged_as_ours(created):
    item = created["item"]
    assert item["ssh_from"] == "203.0.113.7/32" and item["login_user"] == "ec2-user"  # MY_IP_URL's answer
    group_id = item["security_group_id"]
    assert created["groups"] == [group_id]
    assert created["rules"] == [(22, 22, ["203.0.113.7/32"])]
    tags = {t["Key"]: t["Value"] for t in created["group"]["Tags"]}
    assert tags == {"ManagedBy": "ec2-creator-local", "RequestId": created["ec2_tags"]["RequestId"]}
    assert len(created["mutations"]) == 3  # the group, its rule, the launch
    done = created["done"]
    assert done["ssh_string"] == f"ssh -i ~/.ssh/my_ec2_keypair.pem ec2-user@{done['public_ip']}"
    assert done["ssh_unavailable"] is None


def test_ssh_from_a_cidr_or_none_and_a_bad_one_is_a_422_with_no_process(client, api_server, emulator, closed, cidr):
    assert cidr["ssh_from"] == "198.51.100.4/32"
    assert ssh_rules(emulator, cidr["security_group_id"]) == [(22, 22, ["198.51.100.4/32"])]
    rules, closed = closed["rules"], closed["item"]
    assert closed["ssh_from"] == "none" and rules == []
    assert closed["ssh_string"] is None and "no public IPv4" in closed["ssh_unavailable"]
    before = len(api_server.aws_calls())
    for bad in ("everyone", "0.0.0.0/-1", "2001:db8::/32"):
        refused = client.post("/instances", json=BODY | {"ssh_from": bad})
        assert refused.status_code == 422 and "ssh_from" in refused.json()["detail"], refused.text
    assert api_server.aws_calls()[before:] == []


def test_put_ssh_access_replaces_the_rule_on_the_same_instance(client, api_server, emulator, target):
    item, group_id = target, target["security_group_id"]
    assert client.put(f"/instances/{item['id']}/ssh-access", json={"ssh_from": "my_ip"}).status_code == 200
    assert ssh_rules(emulator, group_id) == [(22, 22, ["203.0.113.7/32"])]  # as created
    launched = len(emulator.instances())
    before = len(api_server.aws_calls())
    moved = client.put(f"/instances/{item['id']}/ssh-access", json={"ssh_from": "198.51.100.0/24"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["id"] == item["id"] and moved.json()["ssh_from"] == "198.51.100.0/24"
    assert ssh_rules(emulator, group_id) == [(22, 22, ["198.51.100.0/24"])]  # the old /32 is revoked
    assert len(api_server.mutations_since(before, ignore_tidying=True)) == 2
    assert len(emulator.instances()) == launched  # the same instance: nothing launched
    before = len(api_server.aws_calls())
    assert client.put(f"/instances/{item['id']}/ssh-access", json={"ssh_from": "198.51.100.0/24"}).status_code == 200
    assert api_server.mutations_since(before) == []  # already in force: nothing sent
    back = client.put(f"/instances/{item['id']}/ssh-access", json={"ssh_from": "my_ip"}).json()
    assert back["ssh_from"] == "203.0.113.7/32"
    assert ssh_rules(emulator, group_id) == [(22, 22, ["203.0.113.7/32"])]
    none = client.put(f"/instances/{item['id']}/ssh-access", json={"ssh_from": "none"}).json()
    assert none["ssh_from"] == "none" and none["ssh_string"] is None and "ssh-access" in none["ssh_unavailable"]
    assert ssh_rules(emulator, group_id) == []
    assert client.put(f"/instances/{item['id']}/ssh-access", json={"ssh_from": "x"}).status_code == 422
    assert client.put(f"/instances/{item['id']}/ssh-access", json={}).status_code == 422
    assert client.put("/instances/i-0123456789abcdef0/ssh-access", json={"ssh_from": "none"}).status_code == 404


def group_exists(emulator, group_id: str) -> bool:
    return group_id in {g["GroupId"] for g in emulator.ec2.describe_security_groups()["SecurityGroups"]}


def test_the_group_is_deleted_once_its_instance_is_gone_retrying_while_ec2_still_holds_it(client, api_server,
                                                                                           emulator, closed):
    item = closed["item"]
    group_id = item["security_group_id"]
    # EC2 refuses while the terminated instance's network interface lingers: the sweep carries on.
    api_server.set_faults({"op": "delete-security-group", "fail": aws_error(
        "DependencyViolation", "DeleteSecurityGroup", f"resource {group_id} has a dependent object")})
    before = len(api_server.aws_calls())
    assert client.delete(f"/instances/{item['id']}").status_code == 202
    assert client.post("/instances/sync").status_code == 200  # a refused delete never fails the sweep
    assert client.get(f"/instances/{item['id']}").json()["state"] == "terminated"
    assert [c for c in api_server.aws_calls()[before:] if "delete-security-group" in c]  # it was tried
    assert group_exists(emulator, group_id)
    api_server.set_faults()  # the interface is gone: the next sweep deletes the group
    assert client.post("/instances/sync").status_code == 200
    assert not group_exists(emulator, group_id)
    before = len(api_server.aws_calls())
    assert client.post("/instances/sync").status_code == 200
    assert not [c for c in api_server.aws_calls()[before:] if "delete-security-group" in c]  # done: never again


def test_a_failed_revoke_keeps_the_old_rule_on_record_and_a_retry_finishes_the_change(client, api_server, emulator,
                                                                                     cidr):
    item, group_id = cidr, cidr["security_group_id"]
    before = len(api_server.aws_calls())
    assert client.put(f"/instances/{item['id']}/ssh-access", json={"ssh_from": "198.51.100.4"}).status_code == 200
    assert api_server.mutations_since(before) == []  # created with it: in force already
    api_server.set_faults({"op": "revoke-security-group-ingress", "times": 1, "fail": aws_error(
        "RequestLimitExceeded", "RevokeSecurityGroupIngress", "Request limit exceeded.")})
    failed = client.put(f"/instances/{item['id']}/ssh-access", json={"ssh_from": "198.51.100.5"})
    assert failed.status_code >= 500 and failed.json()["code"] != "internal_error", failed.text
    assert client.get(f"/instances/{item['id']}").json()["ssh_from"] == "198.51.100.4/32"  # still in force
    assert sorted(ssh_rules(emulator, group_id)[0][2]) == ["198.51.100.4/32", "198.51.100.5/32"]
    done = client.put(f"/instances/{item['id']}/ssh-access", json={"ssh_from": "198.51.100.5"})
    assert done.status_code == 200 and done.json()["ssh_from"] == "198.51.100.5/32"
    assert ssh_rules(emulator, group_id) == [(22, 22, ["198.51.100.5/32"])]
