"""Ansible, for real: `ansible-inventory -i ansible/inventory.py --list` (ansible-core from PyPI) against a live
server, and ansible/site.yml in check mode over SSH to a real sshd (Debian's openssh-server) on 127.0.0.1,
with the host variables pointed at it."""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import ROOT, VENV_BIN, safe_env
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer, synced_client
from tests.support.sshd import running_sshd


def ansible_env(tmp: Path, url: str, **extra: str) -> dict[str, str]:
    return safe_env(EC2_CREATOR_URL=url, ANSIBLE_HOME=str(tmp / "ansible-home"),
                    ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"), ANSIBLE_NOCOLOR="1",
                    ANSIBLE_RETRY_FILES_ENABLED="false", **extra)


def inventory_list(tmp: Path, url: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(ROOT / "ansible" / "inventory.py"),
                           "--list"], capture_output=True, text=True, timeout=120, env=ansible_env(tmp, url, **extra))


def test_ansible_inventory_lists_running_instances_with_an_address(api_server, fresh_emulator, tmp_path):
    # What the inventory makes of recorded instances is the subject, not creating them: launched in the emulator
    # (tests/support/seeding.py), a sweep adopts them with their names, tags, addresses and the AMI's login user.
    [web] = launch_managed(fresh_emulator, name="web-1", tags={"Team": "web"})
    [db] = launch_managed(fresh_emulator, name="db 1", tags={"Team": "data", "Env": "prod"})
    [stopped] = launch_managed(fresh_emulator, name="idle", tags={"Team": "web"})
    fresh_emulator.ec2.stop_instances(InstanceIds=[stopped])
    [hidden] = launch_managed(fresh_emulator, name="private", tags={"Team": "web"}, public_ip=False)
    assert not fresh_emulator.instances()[hidden].get("PublicIpAddress")
    with synced_client(api_server) as api:  # its sync adopts all four: one `aws` process
        adopt(api, [web, db, stopped, hidden], state=None)  # recorded, in whatever state
        assert api.get(f"/instances/{stopped}").json()["state"] == "stopped"
        recorded = {i["id"]: i for i in api.get("/instances").json()["instances"]}
    mark = len(api_server.aws_calls())

    done = inventory_list(tmp_path, api_server.url)
    assert done.returncode == 0, done.stderr
    inventory = json.loads(done.stdout)
    hostvars = inventory["_meta"]["hostvars"]
    assert set(hostvars) >= {web, db} and stopped not in hostvars and hidden not in hostvars
    assert hostvars[web]["ansible_host"] == recorded[web]["public_ip"]
    assert hostvars[web]["ansible_user"] == "ec2-user"
    assert hostvars[web]["ansible_ssh_private_key_file"] == "~/.ssh/my_ec2_keypair.pem"  # SSH_KEY_PATH
    assert f"HostKeyAlias={web}" in hostvars[web]["ansible_ssh_common_args"]  # EC2 reuses public IPs
    assert hostvars[db]["ec2_name"] == "db 1" and hostvars[db]["ec2_tags"] == {"Name": "db 1", "Team": "data",
                                                                                "Env": "prod"}
    assert hostvars[db]["ec2_instance_type"] == "t3.micro" and hostvars[db]["ec2_state"] == "running"

    def hosts(group: str) -> set[str]:
        return set(inventory.get(group, {}).get("hosts", []))

    assert {web, db} <= hosts("running") and {web, db} <= hosts("type_t3_micro")
    assert web in hosts("tag_Team_web") and db not in hosts("tag_Team_web")
    assert db in hosts("tag_Team_data") and db in hosts("tag_Env_prod") and db in hosts("tag_Name_db_1")
    assert stopped not in hosts("type_t3_micro") and "stopped" not in inventory
    assert api_server.mutations_since(mark) == []  # the inventory never calls AWS (sweeps may run meanwhile)

    # --host has nothing more to say (Ansible takes the variables from _meta).
    host = subprocess.run([str(ROOT / "ansible" / "inventory.py"), "--host", web], capture_output=True, text=True,
                          timeout=30, env=ansible_env(tmp_path, api_server.url))
    assert (host.returncode, json.loads(host.stdout)) == (0, {})


def test_the_inventory_script_sends_the_token_and_says_what_is_wrong(emulator, tmp_path):
    server = ApiServer(tmp_path, emulator.url, API_TOKEN="s3cret-token-for-ansible")
    try:
        refused = subprocess.run([str(ROOT / "ansible" / "inventory.py"), "--list"], capture_output=True,
                                 text=True, timeout=30, env=ansible_env(tmp_path, server.url))
        assert refused.returncode == 1 and "401" in refused.stderr and "EC2_CREATOR_TOKEN" in refused.stderr
        allowed = inventory_list(tmp_path, server.url, EC2_CREATOR_TOKEN="s3cret-token-for-ansible")
        assert allowed.returncode == 0, allowed.stderr
        assert "_meta" in json.loads(allowed.stdout)
    finally:
        server.stop()
    down = subprocess.run([str(ROOT / "ansible" / "inventory.py"), "--list"], capture_output=True, text=True,
                          timeout=30, env=ansible_env(tmp_path, server.url))
    assert down.returncode == 1 and "is the API running" in down.stderr


def load_inventory_script():
    spec = importlib.util.spec_from_file_location("inventory", ROOT / "ansible" / "inventory.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("environ, url", [
    ({}, "http://127.0.0.1:8000"),
    ({"PORT": "8123"}, "http://127.0.0.1:8123"),  # export PORT=8123; make run
    ({"HOST": "0.0.0.0", "PORT": "8123"}, "http://127.0.0.1:8123"),
    ({"HOST": "192.0.2.7", "PORT": "9000"}, "http://192.0.2.7:9000"),
    ({"HOST": "::1"}, "http://[::1]:8000"),
    ({"EC2_CREATOR_URL": "https://ec2.example.com", "PORT": "8123"}, "https://ec2.example.com"),
])
def test_the_inventory_script_follows_the_servers_port(environ, url):
    assert load_inventory_script().api_url(environ) == url


@pytest.fixture
def ssh_target(tmp_path):
    """A real sshd on 127.0.0.1 (a free port) that lets this user in with a key made for the test."""
    with running_sshd(tmp_path / "sshd") as target:
        yield target


def test_the_playbook_runs_in_check_mode_over_ssh(api_server, fresh_emulator, ssh_target, tmp_path):
    [box] = launch_managed(fresh_emulator, name="Web Box 1", tags={"Team": "web"})
    with synced_client(api_server) as api:
        adopt(api, [box], state=None)
    target = {"ansible_host": "127.0.0.1", "ansible_port": ssh_target["port"], "ansible_user": ssh_target["user"],
              "ansible_ssh_private_key_file": str(ssh_target["key"]),
              "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
              "ansible_python_interpreter": "/usr/bin/python3"}  # Debian's, as on a Debian instance
    if ssh_target["user"] == "root":
        target["ansible_become"] = False  # already root (and this machine has no sudo)
    done = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(ROOT / "ansible" / "inventory.py"),
         str(ROOT / "ansible" / "site.yml"), "--check", "--diff", "--limit", box, "-e", json.dumps(target)],
        capture_output=True, text=True, timeout=300, env=ansible_env(tmp_path, api_server.url))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = done.stdout
    for task in ("Wait for SSH", "Gather facts", "Set the hostname to the instance name",
                 "Install the base packages (Debian, Ubuntu"):
        assert f"TASK [{task}" in out, out
    assert "+hostname = web-box-1" in out  # the hostname it would set (--diff), from the instance name
    recap = out[out.index("PLAY RECAP"):]
    assert box in recap and "ok=4" in recap and "unreachable=0" in recap and "failed=0" in recap, recap
    assert "skipped=1" in recap  # only the Amazon Linux install: every other task ran, in check mode too
