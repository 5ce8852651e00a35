"""A private PostgreSQL cluster for the tests and the benchmark: Debian's `postgresql` package (initdb in a
temporary directory, a free port on 127.0.0.1, trust authentication on loopback only). As root, initdb and
the server run as the `postgres` user (initdb refuses root); otherwise as the current user.

    cluster = PgCluster.start()      # ~1 s
    url = cluster.new_database()     # an empty database of its own, as a postgresql:// URL
    cluster.stop()

The test run shares one cluster between its xdist workers (shared_cluster: the first to ask starts it, under a
file lock in the run's directory; stop_shared_cluster ends it once the run is over); each test still gets a
database of its own.
"""

import fcntl
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
    def __init__(self, root: Path, port: int, proc: subprocess.Popen | None, run_as: list[str]) -> None:
        self.root = root
        self.port = port
        self.proc = proc  # None: another process (an xdist worker) started it
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
        if self.proc is not None and self.proc.poll() is not None:
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
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # a fast shutdown: sessions still open are ended
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def run_lock(run_dir: Path, name: str) -> Iterator[None]:
    """An exclusive lock on `name` among the processes of one test run (its xdist workers)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def shared_cluster(run_dir: Path) -> PgCluster:
    """The run's one cluster: started by the first worker that asks, found by the others (run_dir/pg-cluster.json).
    Starting a cluster (initdb, the server) is about a second of CPU on a quiet machine, several on a busy one."""
    state = run_dir / "pg-cluster.json"
    with run_lock(run_dir, "pg-cluster"):
        if state.exists():
            found = json.loads(state.read_text())
            cluster = PgCluster(Path(found["root"]), found["port"], None, [])
            wait_until(cluster._ready, timeout=60, interval=0.1)
            return cluster
        cluster = PgCluster.start()
        assert cluster.proc is not None
        state.write_text(json.dumps({"root": str(cluster.root), "port": cluster.port, "pid": cluster.proc.pid}))
        return cluster


def stop_shared_cluster(run_dir: Path) -> None:
    """End the run's cluster, if one was started (by the process that runs the whole session, once the workers are
    done). Its starter may have exited: the server is stopped by its process group and awaited by its pid."""
    state = run_dir / "pg-cluster.json"
    if not state.exists():
        return
    found = json.loads(state.read_text())
    state.unlink()
    pid = found["pid"]

    def gone() -> bool:
        try:  # our own child (no xdist): reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        try:  # a worker's, now init's: gone, or a zombie that init has yet to reap
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return True

    try:
        os.killpg(pid, signal.SIGINT)  # a fast shutdown: sessions still open are ended
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while not gone():
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(gone, timeout=30, interval=0.05)
            break
        time.sleep(0.05)
    shutil.rmtree(found["root"], ignore_errors=True)
