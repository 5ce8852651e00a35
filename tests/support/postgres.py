"""A private PostgreSQL cluster for the tests and the benchmark: Debian's `postgresql` package (initdb in a
temporary directory, a free port on 127.0.0.1, trust authentication on loopback only). As root, initdb and
the server run as the `postgres` user (initdb refuses root); otherwise as the current user.

    cluster = PgCluster.start()      # ~1 s
    url = cluster.new_database()     # an empty database of its own, as a postgresql:// URL
    cluster.stop()
"""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.support.processes import free_port, wait_until

USER = "ec2cl"


def pg_bin() -> Path:
    """Where initdb and postgres are: PG_BIN, else Debian's newest /usr/lib/postgresql/N/bin, else PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise AssertionError("no PostgreSQL server found: run `make system-deps` (Debian's postgresql package) or "
                         "set PG_BIN to the directory holding initdb and postgres")


class PgCluster:
    def __init__(self, root: Path, port: int, proc: subprocess.Popen, run_as: list[str]) -> None:
        self.root = root
        self.port = port
        self.proc = proc
        self.run_as = run_as

    @classmethod
    def start(cls) -> "PgCluster":
        # In /tmp itself: the postgres user cannot enter pytest's (root's, 0700) temporary directories.
        root = Path(tempfile.mkdtemp(prefix="ec2cl-pg-"))
        data, log = root / "data", root / "server.log"
        run_as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            owner = pwd.getpwnam("postgres")
            os.chown(root, owner.pw_uid, owner.pw_gid)
            run_as = ["runuser", "-u", "postgres", "--"]
        binaries = pg_bin()
        subprocess.run([*run_as, str(binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                        "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        port = free_port()
        proc = subprocess.Popen(
            [*run_as, str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={root}", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=300"],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        cluster = cls(root, port, proc, run_as)
        wait_until(cluster._ready, timeout=60, interval=0.1)
        return cluster

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"postgres exited with {self.proc.returncode}: see {self.root / 'server.log'}")
        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def new_database(self, template: str | None = None) -> str:
        """A new database (a copy of `template`, if given); its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # a fast shutdown: sessions still open are ended
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
