"""The ssh argv: login user, key, host key alias, and nothing in the command read as an option."""

from pathlib import Path

import pytest

from ec2cl import ssh
from ec2cl.cli import ssh_config_text
from ec2cl.errors import CliError

BOX = {"id": "i-0123456789abcdef0", "public_ip": "198.51.100.7", "login_user": "ubuntu",
       "ssh_string": "ssh -i ~/.ssh/server.pem ubuntu@198.51.100.7"}


def test_the_session_argv(tmp_path):
    key = tmp_path / "k.pem"
    key.write_text("k")
    assert ssh.session_argv(BOX, key, ["-v", "uname -a"]) == [
        "ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "HostKeyAlias=i-0123456789abcdef0",
        "-o", "StrictHostKeyChecking=accept-new", "--", "ubuntu@198.51.100.7", "-v", "uname -a"]
    missing = tmp_path / "missing.pem"  # then the agent may offer its keys: no IdentitiesOnly
    assert "IdentitiesOnly=yes" not in ssh.session_argv(BOX, missing)
    assert ssh.destination({**BOX, "login_user": None}) == "ec2-user@198.51.100.7"


def test_the_probe_runs_true_in_batch_mode(tmp_path):
    argv = ssh.probe_argv(BOX, tmp_path / "k.pem", 7)
    assert argv[-3:] == ["--", "ubuntu@198.51.100.7", "true"]
    assert {"BatchMode=yes", "ConnectTimeout=7", "HostKeyAlias=i-0123456789abcdef0"} <= set(argv)


def test_which_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ssh.pick_key("~/mine.pem", BOX) == tmp_path / "mine.pem"  # --identity, as given
    assert ssh.pick_key(None, BOX) == tmp_path / ".ssh" / "my_ec2_keypair.pem"  # the server's is not here
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "server.pem").write_text("k")
    assert ssh.pick_key(None, BOX) == tmp_path / ".ssh" / "server.pem"  # SSH_KEY_PATH, on this machine
    monkeypatch.chdir(tmp_path)
    relative = {**BOX, "ssh_string": "ssh -i .ssh/server.pem ubuntu@198.51.100.7"}
    assert ssh.pick_key(None, relative) == tmp_path / ".ssh" / "server.pem"  # made absolute
    assert ssh.key_from_ssh_string("ssh -i 'a b.pem' u@h") == "a b.pem"
    assert ssh.key_from_ssh_string(None) is None and ssh.key_from_ssh_string("ssh 'unclosed") is None
    assert isinstance(ssh.pick_key(None, {}), Path)


@pytest.mark.parametrize("field, value", [
    ("public_ip", "-oProxyCommand=touch /tmp/x"), ("public_ip", "evil.example.com"), ("public_ip", None),
    ("login_user", "root -oProxyCommand=x"), ("login_user", "a@b"), ("login_user", "Admin\n"),
    ("id", "i-1\nHost *"), ("id", "i-0123456789abcdef0\n"), ("login_user", "ec2-user\n"),
    ("public_ip", "fe80::1%a\nHost *\n    ProxyCommand sh -c x"), ("public_ip", "::1"), ("public_ip", "010.0.0.1"),
])
def test_an_api_value_that_is_not_an_address_user_or_id_never_reaches_ssh(field, value, tmp_path):
    hostile = {**BOX, field: value}
    assert ssh.unusable(hostile)
    with pytest.raises(CliError) as raised:
        ssh.session_argv(hostile, tmp_path / "k.pem")
    assert raised.value.code == "ssh_unavailable"


def test_ssh_config_leaves_out_what_it_cannot_write_safely(tmp_path):
    boxes = [{**BOX, "state": "running", "name": "web 1"},  # a name with a space: by its id only
             {**BOX, "id": "i-0aaaaaaaaaaaaaaaa", "state": "running", "name": "db\nHost *\n ProxyCommand x"},
             {**BOX, "id": "i-0bbbbbbbbbbbbbbbb", "state": "running", "name": "evil", "public_ip": "x\nHost *"},
             {**BOX, "id": "i-0dddddddddddddddd", "state": "running", "name": "evil",
              "public_ip": "fe80::1%a\nHost *\n    ProxyCommand sh -c x"},
             {**BOX, "id": "i-0cccccccccccccccc", "state": "stopped", "name": "idle"}]
    text = ssh_config_text(boxes, str(tmp_path / "k.pem"))
    hosts = [line for line in text.splitlines() if line.startswith("Host ")]
    assert sorted(hosts) == ["Host i-0123456789abcdef0", "Host i-0aaaaaaaaaaaaaaaa"]
    assert "ProxyCommand" not in text and "evil" not in text and "idle" not in text
