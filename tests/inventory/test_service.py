"""The pure part of GET /inventory: which instances are hosts, their variables and their groups."""

from app.inventory.service import build_inventory, group_name
from app.store.rows import InstanceState


def row(instance_id: str, **fields) -> dict:
    base = {"id": instance_id, "name": "web 1", "state": InstanceState.RUNNING, "public_ip": "203.0.113.7",
            "login_user": "ubuntu", "instance_type": "t3.micro", "ami": "ami-0abc", "region": "us-east-1",
            "tags": {"Team": "web/ops"}, "stop_at": None, "endpoint": ""}
    return base | fields


def test_only_running_instances_with_an_address_of_this_ec2_are_hosts():
    rows = [row("i-01"), row("i-02", state=InstanceState.STOPPED), row("i-03", public_ip=None),
            row("i-04", endpoint="http://127.0.0.1:5055"), row("i-05", endpoint=None, name=None, tags={})]
    inventory = build_inventory(rows, "~/.ssh/key.pem", "")
    assert set(inventory["_meta"]["hostvars"]) == {"i-01", "i-05"}
    vars_ = inventory["_meta"]["hostvars"]["i-01"]
    assert (vars_["ansible_host"], vars_["ansible_user"], vars_["ansible_ssh_private_key_file"]) == (
        "203.0.113.7", "ubuntu", "~/.ssh/key.pem")
    assert vars_["ec2_tags"] == {"Name": "web 1", "Team": "web/ops"}
    assert inventory["running"] == {"hosts": ["i-01", "i-05"]}
    assert inventory["tag_Team_web_ops"] == {"hosts": ["i-01"]} and inventory["tag_Name_web_1"] == {"hosts": ["i-01"]}
    assert inventory["type_t3_micro"] == {"hosts": ["i-01", "i-05"]}
    assert inventory["all"]["children"] == sorted(k for k in inventory if k not in ("_meta", "all"))


def test_group_names_hold_only_what_ansible_allows():
    assert group_name("tag", "aws:cloudformation:stack-name", "my stack") == (
        "tag_aws_cloudformation_stack_name_my_stack")
    assert group_name("tag", "Flag", "") == "tag_Flag"
    assert group_name("type", "t4g.small") == "type_t4g_small"
