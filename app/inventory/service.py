"""GET /inventory: the recorded instances as an Ansible dynamic inventory (from the database; never calls AWS).

Hosts are the running instances that have a public IPv4, named by instance id (unique and stable; the
name is in `ec2_name` and in the `tag_Name_<name>` group). Groups follow amazon.aws.aws_ec2's keyed
groups: `running`, `type_t3_micro`, `tag_<key>_<value>` (characters Ansible does not allow in a group
name become `_`).
"""

import re
from collections.abc import Iterable
from typing import Any

from app.store.rows import InstanceRow, InstanceState

INVALID_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")
# The first connection to a new instance has no known host key: trust it on first use (OpenSSH's
# accept-new), never silently accept a changed one. Keys are kept under the instance id, not the address:
# EC2 hands a released public IP to the next instance (and an instance gets a new one at each start).
SSH_ARGS = "-o StrictHostKeyChecking=accept-new -o HostKeyAlias={}"


def group_name(*parts: str) -> str:
    return INVALID_GROUP_CHARS.sub("_", "_".join(p for p in parts if p != ""))


def build_inventory(rows: Iterable[InstanceRow], ssh_key_path: str, endpoint: str) -> dict[str, Any]:
    """`ansible-inventory --list` JSON: `_meta.hostvars` plus one entry per group; `all` lists the groups."""
    hostvars: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row["state"] != InstanceState.RUNNING or not row["public_ip"]:
            continue
        if row["endpoint"] is not None and row["endpoint"] != endpoint:
            continue  # recorded against another EC2 (the sandbox vs real AWS): its address is not this one's
        host = row["id"]
        tags = {**(row["tags"] or {}), **({"Name": row["name"]} if row["name"] else {})}
        hostvars[host] = {
            "ansible_host": row["public_ip"], "ansible_user": row["login_user"] or "ec2-user",
            "ansible_ssh_private_key_file": ssh_key_path, "ansible_ssh_common_args": SSH_ARGS.format(host),
            "ec2_id": host, "ec2_name": row["name"], "ec2_state": str(row["state"]),
            "ec2_instance_type": row["instance_type"], "ec2_ami": row["ami"], "ec2_region": row["region"],
            "ec2_public_ip": row["public_ip"], "ec2_tags": tags, "ec2_stop_at": row["stop_at"],
        }
        names = [str(row["state"]), group_name("type", row["instance_type"] or "unknown")]
        names += [group_name("tag", key, value) for key, value in sorted(tags.items())]
        for name in names:
            groups.setdefault(name, []).append(host)
    inventory: dict[str, Any] = {"_meta": {"hostvars": hostvars}, "all": {"children": sorted(groups)}}
    for name in sorted(groups):
        inventory[name] = {"hosts": sorted(groups[name])}
    return inventory
