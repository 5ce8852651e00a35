"""GET /inventory: an Ansible dynamic inventory of the running instances (from the database; never calls AWS)."""

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from app.api.deps import CallerDep, SettingsDep, StoreDep, require_token
from app.api.errors import error_responses
from app.inventory.service import build_inventory

router = APIRouter(tags=["inventory"], dependencies=[Depends(require_token)], responses=error_responses(401))

EXAMPLE = {
    "_meta": {"hostvars": {"i-0123456789abcdef0": {
        "ansible_host": "203.0.113.7", "ansible_user": "ec2-user",
        "ansible_ssh_private_key_file": "~/.ssh/my_ec2_keypair.pem",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=accept-new -o HostKeyAlias=i-0123456789abcdef0",
        "ec2_id": "i-0123456789abcdef0",
        "ec2_name": "my-box", "ec2_state": "running", "ec2_instance_type": "t3.micro", "ec2_ami": "ami-0abc",
        "ec2_region": "us-east-1", "ec2_public_ip": "203.0.113.7", "ec2_tags": {"Name": "my-box", "Team": "web"},
        "ec2_stop_at": None}}},
    "all": {"children": ["running", "tag_Name_my_box", "tag_Team_web", "type_t3_micro"]},
    "running": {"hosts": ["i-0123456789abcdef0"]},
    "tag_Name_my_box": {"hosts": ["i-0123456789abcdef0"]},
    "tag_Team_web": {"hosts": ["i-0123456789abcdef0"]},
    "type_t3_micro": {"hosts": ["i-0123456789abcdef0"]},
}


@router.get("/inventory", response_model=dict[str, Any],
            responses={200: {"content": {"application/json": {"example": EXAMPLE}}}})
async def inventory(store: StoreDep, settings: SettingsDep, caller: CallerDep) -> dict[str, Any]:
    """Ansible dynamic inventory (`ansible/inventory.py --list`): running instances with a public IPv4 (a user's
    own; an admin's: all)."""
    rows = await asyncio.to_thread(store.list_instances)
    return build_inventory([r for r in rows if caller.may_see(r["owner"])], settings.ssh_key_path,
                           settings.endpoint_key)
