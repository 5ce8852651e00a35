"""ssh into an instance with the system `ssh`: its login user, its key, its id as the host key's name (EC2 hands a
public address to the next instance once this one lets it go), and a probe through `ssh` itself until sshd
answers, so the user's own ssh configuration applies to the probe as to the session."""

import ipaddress
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ec2cl.errors import REFUSED, CliError
from ec2cl.names import is_id

DEFAULT_KEY = "~/.ssh/my_ec2_keypair.pem"
SSH = "ssh"  # the system ssh, found on PATH as the user's shell would
# ssh exits 255 when it could not connect or log in; any other code is the remote command's.
SSH_FAILED = 255


def key_from_ssh_string(ssh_string: str | None) -> str | None:
    """The `-i PATH` of the server's ssh_string (its SSH_KEY_PATH)."""
    try:
        words = shlex.split(ssh_string or "")
    except ValueError:
        return None
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "-i":
            return value
    return None


def server_key(instance: dict) -> Path | None:
    """The server's SSH_KEY_PATH, when that file is on this machine (absolute)."""
    named = key_from_ssh_string(instance.get("ssh_string"))
    if named and Path(named).expanduser().is_file():
        return Path(named).expanduser().resolve()  # (a relative SSH_KEY_PATH: the server runs here too)
    return None


def pick_key(identity: str | None, instance: dict) -> Path:
    """--identity; else the server's SSH_KEY_PATH when that file is on this machine; else ~/.ssh/my_ec2_keypair.pem."""
    if identity:
        return Path(identity).expanduser()
    return server_key(instance) or Path(DEFAULT_KEY).expanduser()


def options(instance: dict, key: Path) -> list[str]:
    """The ssh options for this instance (a session's and the probe's alike)."""
    argv = ["-i", str(key)]
    if key.is_file():  # only that key (an agent with many keys gets "Too many authentication failures")
        argv += ["-o", "IdentitiesOnly=yes"]
    return argv + ["-o", f"HostKeyAlias={instance['id']}", "-o", "StrictHostKeyChecking=accept-new"]


# What an instance's fields may hold before they reach ssh's argv or ~/.ssh/config: the API's values are checked
# anyway, so that a server answering nonsense cannot make ssh read an option, another host or a config directive.
LOGIN_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def unusable(instance: dict) -> str | None:
    """Why the instance's id, address or login user cannot be handed to ssh (None: they can)."""
    if not is_id(str(instance.get("id", ""))):
        return f"its id {instance.get('id')!r} is not an instance id"
    address = str(instance.get("public_ip"))
    try:  # IPv4, written as such (an IPv6 scope id after % may hold anything)
        if str(ipaddress.IPv4Address(address)) != address:
            raise ValueError(address)
    except ValueError:
        return f"its public address {instance.get('public_ip')!r} is not an IPv4 address"
    if not LOGIN_USER.fullmatch(str(instance.get("login_user") or "ec2-user")):
        return f"its login user {instance.get('login_user')!r} is not a user name"
    return None


def destination(instance: dict) -> str:
    """`user@address`, both checked (unusable())."""
    why = unusable(instance)
    if why:
        raise CliError(f"cannot ssh into {instance.get('id')}: {why}", REFUSED, "ssh_unavailable")
    return f"{instance.get('login_user') or 'ec2-user'}@{instance['public_ip']}"


def session_argv(instance: dict, key: Path, command: Sequence[str] = ()) -> list[str]:
    """`ssh <options> -- user@address [command...]`: after `--` nothing the command holds is read as an option."""
    return [SSH, *options(instance, key), "--", destination(instance), *command]


def probe_argv(instance: dict, key: Path, connect_timeout: int) -> list[str]:
    return [SSH, *options(instance, key), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ConnectionAttempts=1", "--", destination(instance), "true"]


@dataclass(frozen=True)
class Probe:
    ready: bool
    fatal: bool  # no point in trying again (a changed host key)
    reason: str  # ssh's last word when not ready


def probe(instance: dict, key: Path, connect_timeout: int) -> Probe:
    """One try: does sshd answer and let us in? (ssh's 255 is "could not", any other code is the command's.)"""
    try:
        done = subprocess.run(probe_argv(instance, key, connect_timeout), capture_output=True, text=True,  # noqa: S603
                              timeout=connect_timeout + 10, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Probe(False, False, "ssh did not finish")
    except FileNotFoundError:
        return Probe(False, True, "no `ssh` on PATH: install OpenSSH's client")
    if done.returncode != SSH_FAILED:
        return Probe(True, False, "")
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("Warning:")]
    reason = lines[-1].strip() if lines else "ssh could not connect"
    changed = "IDENTIFICATION HAS CHANGED" in done.stderr or "Host key verification failed" in done.stderr
    return Probe(False, changed, reason)


def exec_ssh(argv: list[str]) -> None:
    """Become ssh: its exit code is the command's."""
    os.execvp(argv[0], argv)  # noqa: S606
