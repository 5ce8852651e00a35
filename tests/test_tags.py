"""Tags and filters: PATCH name/tags through the real scripts (one `aws` process per kind of change),
changes made outside the API picked up by a sweep, and GET /instances filters that never call AWS.

No test creates through the API (what a create records is tests/test_lifecycle.py's subject; a create with tags is
run by the REFERENCE tour, tests/test_readme.py): every test's instances are launched straight in the emulator and
adopted by one sync for the module (`seeded`, tests/support/seeding.py). Every test looks only at its own
instances: none resets the emulator or syncs first (`reader`)."""

import httpx
import pytest

from app.instances.schemas import InstanceFilter
from tests.support.seeding import adopt, launch_managed

BODY = {"name": "tagged", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}


def ec2_tags(emulator, instance_id: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in emulator.instances()[instance_id].get("Tags", [])}


def test_patch_sets_and_removes_tags_and_renames_with_one_process_each(reader, api_server, emulator, seeded):
    # The box is launched with its tags and adopted (`seeded`): what a PATCH does is the subject, not the create
    # (which cost its group, its launch and the sweep after it).
    api, box = reader, seeded["patched"]
    assert api.get(f"/instances/{box}").json()["tags"] == {"Team": "web", "Env": "dev"}
    mark = len(api_server.aws_calls())
    changed = api.patch(f"/instances/{box}", json={"name": "renamed", "tags": {"Team": "platform", "Env": None,
                                                                              "Owner": "alice"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "renamed"
    assert changed.json()["tags"] == {"Team": "platform", "Owner": "alice"}
    calls = api_server.mutations_since(mark)
    assert [c[c.index("ec2") + 1] for c in calls] == ["create-tags", "delete-tags"], calls
    tags = ec2_tags(emulator, box)
    assert tags["Name"] == "renamed" and tags["Team"] == "platform" and tags["Owner"] == "alice"
    assert "Env" not in tags and tags["ManagedBy"] == "ec2-creator-local"
    # Unchanged values cost nothing; a tag-only PATCH leaves the auto-stop alone.
    mark = len(api_server.aws_calls())
    again = api.patch(f"/instances/{box}", json={"tags": {"Team": "platform"}})
    assert again.status_code == 200 and api_server.mutations_since(mark) == []
    assert again.json()["auto_stop_minutes"] == changed.json()["auto_stop_minutes"]


@pytest.fixture(scope="module")
def seeded(api_server, emulator) -> dict[str, str]:
    """The module's tracked running instances by role, launched in the emulator and adopted by one sync: the box
    renamed and retagged by PATCH, the target of every refused PATCH (each is refused before any `aws` process),
    the box changed outside the API, the three boxes filtered (alpha, beta, gamma) and the box terminated with its
    tags."""
    launched = {
        "patched": launch_managed(emulator, name=BODY["name"], tags={"Team": "web", "Env": "dev"})[0],
        "refusal-target": launch_managed(emulator, name="refusal-target")[0],
        "outside": launch_managed(emulator, name=BODY["name"], tags={"Team": "web"})[0],
        "alpha": launch_managed(emulator, name="alpha", tags={"Team": "web", "Env": "prod"})[0],
        "beta": launch_managed(emulator, name="beta", tags={"Team": "web"})[0],
        "gamma": launch_managed(emulator, name="gamma", tags={"Team": "data=science"})[0],
        "terminated": launch_managed(emulator, name=BODY["name"], tags={"Team": "web"})[0],
    }
    with httpx.Client(base_url=api_server.url, timeout=60) as api:
        adopt(api, list(launched.values()))
    return launched


@pytest.fixture
def refusal_target(seeded) -> str:
    return seeded["refusal-target"]


@pytest.mark.parametrize(("patch", "status", "code"), [
    ({"tags": {"ManagedBy": "me"}}, 400, "reserved_tag_key"),
    ({"tags": {"Name": "x"}}, 400, "reserved_tag_key"),
    ({"tags": {"aws:cloudformation:stack": "x"}}, 400, "reserved_tag_key"),
    ({"tags": {"RequestId": None}}, 400, "reserved_tag_key"),
    ({"tags": {}}, 422, "validation_error"),
    ({"name": None}, 422, "validation_error"),
    ({"tags": {"bad\nkey": "x"}}, 422, "validation_error"),
    ({"auto_stop_minutes": 60, "stop_at": "2099-01-01T00:00:00Z"}, 422, "validation_error"),
    ({"tags": None}, 422, "validation_error"),
    ({"tags": {f"k{n}": "v" for n in range(41)}}, 422, "validation_error"),
])
def test_bad_patches_are_refused_before_any_process(reader, api_server, refusal_target, patch, status, code):
    mark = len(api_server.aws_calls())
    answer = reader.patch(f"/instances/{refusal_target}", json=patch)
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert api_server.mutations_since(mark) == []


def test_tags_and_name_changed_outside_the_api_show_after_a_sweep(reader, emulator, seeded):
    api, box = reader, seeded["outside"]
    assert api.get(f"/instances/{box}").json()["tags"] == {"Team": "web"}
    emulator.ec2.create_tags(Resources=[box], Tags=[{"Key": "CostCenter", "Value": "42"},
                                                          {"Key": "Name", "Value": "from-console"}])
    emulator.ec2.delete_tags(Resources=[box], Tags=[{"Key": "Team"}])
    api.post("/instances/sync").raise_for_status()
    got = api.get(f"/instances/{box}").json()
    assert got["name"] == "from-console" and got["tags"] == {"CostCenter": "42"}
    # A tag added in the console and not yet swept is still removed when a PATCH says null.
    emulator.ec2.create_tags(Resources=[box], Tags=[{"Key": "Scratch", "Value": "1"}])
    assert api.patch(f"/instances/{box}", json={"tags": {"Scratch": None}}).status_code == 200
    assert "Scratch" not in ec2_tags(emulator, box)


def test_list_filters_by_state_tag_and_name_without_calling_aws(reader, api_server, emulator, seeded):
    # Which instances are listed is the subject, not how they got their states: set up in the emulator, adopted by
    # syncs (the lifecycle suite stops and deletes through the API).
    api = reader
    a, b, c = seeded["alpha"], seeded["beta"], seeded["gamma"]
    emulator.ec2.stop_instances(InstanceIds=[b])
    emulator.ec2.terminate_instances(InstanceIds=[c])
    adopt(api, {a: "running", b: "stopped", c: "terminated"})  # the record catches up with the changes
    mark = len(api_server.aws_calls())

    def ids(**params) -> list[str]:
        """The ids listed, of this test's three (the module's server still tracks earlier tests' instances)."""
        answer = api.get("/instances", params=params)
        assert answer.status_code == 200, answer.text
        return sorted(i["id"] for i in answer.json()["instances"] if i["id"] in (a, b, c))

    assert ids(state="running") == [a]
    assert ids(state=["running", "stopped"]) == sorted([a, b])
    assert ids(tag="Team=web") == sorted([a, b])
    assert ids(tag=["Team=web", "Env=prod"]) == [a]
    assert ids(tag="Env") == [a]
    assert ids(tag="Name=beta") == [b]
    assert ids(name="alpha") == [a] and ids(name="alp") == []
    assert ids(state="terminated") == [c]  # asking for terminated ones lists them
    assert ids(tag="Team=data=science", include_terminated="true") == [c]
    assert ids(tag="Team=data=science") == []
    # Filtering never calls AWS (a sweep the delete asked for may still run: describe-instances only).
    assert {c[c.index("ec2") + 1] for c in api_server.aws_calls()[mark:]} <= {"describe-instances"}
    assert "cost" not in api.get("/instances", params={"name": "alpha"}).json()["instances"][0]
    for bad in ({"state": "sleeping"}, {"tag": "=x"}, {"tag": "a\nb"}, {"name": "x" * 129}, {"name": ""}):
        answer = api.get("/instances", params=bad)
        assert answer.status_code == 422 and answer.json()["code"] == "validation_error", (bad, answer.text)


def test_a_terminated_instance_keeps_its_tags(reader, api_server, emulator, seeded):
    api, box = reader, seeded["terminated"]
    emulator.ec2.terminate_instances(InstanceIds=[box])
    adopt(api, [box], "terminated")
    mark = len(api_server.aws_calls())
    answer = api.patch(f"/instances/{box}", json={"tags": {"Team": "x"}})
    assert (answer.status_code, answer.json()["code"]) == (409, "wrong_state")
    assert api_server.mutations_since(mark) == []
    assert api.get(f"/instances/{box}").json()["tags"] == {"Team": "web"}  # kept, and not changed by the PATCH


def test_filter_logic():
    row = {"state": "running", "name": "web", "tags": {"Team": "a=b", "Env": ""}}
    assert InstanceFilter.of(["running"], ["Team=a=b", "Env", "Env="], "web").matches(row)
    assert not InstanceFilter.of(None, ["Team=a"], None).matches(row)
    assert not InstanceFilter.of(["stopped"], None, None).matches(row)
    assert InstanceFilter.of(None, ["Name=web"], None).matches(row)
    assert InstanceFilter.of(["terminated"], None, None).asks_for_ended
