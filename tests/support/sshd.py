"""A real sshd (Debian's openssh-server) on 127.0.0.1, on a free port, that lets this user in with a key made for
it: the far end of tests that ssh (Ansible's playbook, `ec2cl ssh`)."""

import getpass
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import free_port, stop_process, wait_until

SSHD = Path("/usr/sbin/sshd")


@contextmanager
def running_sshd(home: Path) -> Iterator[dict]:
    """sshd with its keys and config in `home` (a new directory); yields its port, the client's private key
    and the user it lets in."""
    assert SSHD.exists(), "openssh-server is missing: run `make system-deps` (scripts/system_deps.sh)"
    home.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    shutil.copyfile(home / "client_key.pub", home / "authorized_keys")
    port = free_port()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPidFile {home / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(home / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=open(home / "sshd.log", "wb"), start_new_session=True)

    def listening() -> bool:
        probe = subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True, timeout=10)
        return proc.poll() is None and b"ssh-ed25519" in probe.stdout

    try:
        wait_until(listening, timeout=20, interval=0.3)
        yield {"port": port, "key": home / "client_key", "user": getpass.getuser(), "host_key": home / "host_key"}
    finally:
        stop_process(proc)
