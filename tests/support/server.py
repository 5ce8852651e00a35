"""The real API server process (`python -m uvicorn app.main:app`) behind the AWS_CLI shim, which
logs every `aws` call and injects the faults a test asks for (aws_shim.sh, aws_faults.py)."""

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx

from tests.support.postgres import run_lock
from tests.support.processes import ROOT, TLS, VENV_BIN, free_port, safe_env, stop_process, wait_http, wait_until

AWS_SHIM = Path(__file__).resolve().parent / "aws_shim.sh"
BACKGROUND_OPERATIONS = {"describe-instances", "describe-instance-types", "get-parameters", "describe-images",
                         "get-caller-identity", "--version", "describe-alarms"}
TIDYING = {"delete-security-group"}  # a sweep deleting the group of an instance deleted earlier
# By emulator URL: a database holding only that emulator's AMI catalogue (and the CLI's version). A new
# server's database starts as a copy, so the three `aws` processes that fetch the catalogue run once per
# run, not once per server (they were a fifth of the suite's processes): one xdist worker builds it from its
# emulator (a server start and four `aws` processes), the others copy it and rename its scope (the endpoint
# URL) to their own emulator's: every moto server publishes the same catalogue. ApiServer(warm_catalog=False)
# opts out.
CATALOG_TEMPLATES: dict[str, Path] = {}


class ApiServer:
    """The real server: `python -m uvicorn app.main:app` from the repo root, on a free port."""

    def __init__(self, tmp: Path, emulator_url: str | None, cwd: Path = ROOT, unset: tuple[str, ...] = (),
                 warm_catalog: bool = True, **env: str) -> None:
        self.tmp = tmp
        self.cwd = cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = Path(env.get("DATABASE_URL") or tmp / "instances.db")
        self.shim_log = tmp / "aws_calls.log"
        self.shim_log.touch()
        self.faults = tmp / "aws_faults.json"  # rules for tests/support/aws_faults.py; empty: no faults
        self.faults.write_text("")
        self.log_path = tmp / "server.log"
        settings = {
            "DATABASE_URL": str(self.db_path),
            # No timed sweeps: a test syncs (POST /instances/sync) or mutates (which asks for a sweep); a
            # module that tests the periodic loop sets its own interval.
            "RECONCILE_INTERVAL_SECONDS": "3600",
            # Instances of earlier tests stay committed until proven gone: only the budget tests set a budget.
            "BUDGET_USD": "100000",
            "AWS_CLI": str(AWS_SHIM),
            "AWS_SHIM_LOG": str(self.shim_log),
            "AWS_SHIM_REAL": str(VENV_BIN / "aws"),
            "AWS_SHIM_FAULTS": str(self.faults),
            "SSH_KEY_PATH": "~/.ssh/my_ec2_keypair.pem",
        }
        if emulator_url:
            settings |= {"EC2_ENDPOINT_URL": emulator_url, "AWS_ENDPOINT_URL": emulator_url}
        self.env = {k: v for k, v in safe_env(**(settings | env)).items() if k not in unset}
        self.proc: subprocess.Popen | None = None
        template = CATALOG_TEMPLATES.get(emulator_url or "")
        if warm_catalog and template and self.db_path.parent.is_dir() and not self.db_path.exists():
            shutil.copyfile(template, self.db_path)
            self.db_path.chmod(0o600)
        self.start()

    def start(self, wait: bool = True) -> None:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(ROOT), "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            wait_http(f"{self.url}/health", proc=self.proc)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)
            self.log.close()

    def set_faults(self, *rules: dict) -> None:
        """Make chosen `aws` calls misbehave (see tests/support/aws_faults.py); no rules: none do."""
        self.faults.write_text(json.dumps(list(rules)) if rules else "")

    def aws_calls(self) -> list[list[str]]:
        """Every `aws` process the server spawned so far, as argv lists."""
        return [json.loads(line) for line in self.shim_log.read_text().splitlines() if line.strip()]

    def calls_of(self, operation: str, since: int = 0) -> int:
        """How many `aws` processes ran `operation` (run-instances, ...) after `aws_calls()[:since]`."""
        return sum(operation in call for call in self.aws_calls()[since:])

    def mutations_since(self, mark: int, ignore_tidying: bool = False) -> list[list[str]]:
        """`aws` processes spawned after `aws_calls()[:mark]` that are not background reads (reconcile sweeps,
        the AMI catalogue warming up at start). ignore_tidying: nor a sweep deleting the group of an instance
        an earlier test deleted (for a test on a module server it did not reset)."""
        background = BACKGROUND_OPERATIONS | (TIDYING if ignore_tidying else set())
        return [c for c in self.aws_calls()[mark:] if not background & set(c)]

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def synced_client(server: ApiServer) -> Iterator[httpx.Client]:
    """An httpx client on `server`, with no faults injected and its record caught up by a sync."""
    server.set_faults()
    with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as client:
        client.post("/instances/sync").raise_for_status()
        yield client
    server.set_faults()


def aws_error(code: str, operation: str, message: str) -> dict:
    """A `fail` fault that answers the way the AWS CLI does when EC2 refuses (stderr text, exit 255)."""
    return {"stderr": f"An error occurred ({code}) when calling the {operation} operation: {message}", "code": 255}


def build_catalog_template(emulator_url: str, tmp: Path) -> Path:
    """Start a server once, let it fetch the emulator's AMI catalogue, keep only that (CATALOG_TEMPLATES)."""
    server = ApiServer(tmp, emulator_url, warm_catalog=False)
    try:
        def fetched() -> bool:
            with closing(sqlite3.connect(server.db_path)) as conn:
                return conn.execute("SELECT count(*) FROM kv WHERE key LIKE 'catalog_resolved_at:%' "
                                    "OR key LIKE 'aws_cli_version:%'").fetchone()[0] == 2

        wait_until(fetched, timeout=60, interval=0.1)
    finally:
        server.stop()
    template = tmp / "catalog-template.db"
    with closing(sqlite3.connect(server.db_path)) as source, closing(sqlite3.connect(template)) as copy:
        source.backup(copy)
        copy.executescript("DELETE FROM instances; DELETE FROM instance_events; DELETE FROM launches; "
                           "DELETE FROM kv WHERE key NOT LIKE 'catalog_resolved_at:%' "
                           "AND key NOT LIKE 'aws_cli_version:%';")
    CATALOG_TEMPLATES[emulator_url] = template
    return template


def build_pg_catalog_template(cluster, emulator_url: str, tmp: Path) -> str:
    """The PostgreSQL twin of build_catalog_template: a database to copy (CREATE DATABASE ... TEMPLATE)."""
    import psycopg

    url = cluster.new_database()
    server = ApiServer(tmp, emulator_url, warm_catalog=False, DATABASE_URL=url)
    try:
        def fetched() -> bool:
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM kv WHERE key LIKE 'catalog_resolved_at:%' "
                                    "OR key LIKE 'aws_cli_version:%'").fetchone()[0] == 2

        wait_until(fetched, timeout=60, interval=0.1)
    finally:
        server.stop()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in ("DELETE FROM instances", "DELETE FROM instance_events", "DELETE FROM launches",
                          "DELETE FROM kv WHERE key NOT LIKE 'catalog_resolved_at:%' "
                          "AND key NOT LIKE 'aws_cli_version:%'"):
            conn.execute(statement)
    return url.rsplit("/", 1)[1]


def rescope_catalog(conn, old_url: str, new_url: str, placeholder: str = "?") -> None:
    """Make a catalogue fetched from the emulator at old_url that of the emulator at new_url (the scope is
    "<endpoint>|<region>", in two tables and the kv key that dates it)."""
    old, new = f"{old_url}|", f"{new_url}|"
    for statement, args in (("UPDATE ami_catalog SET scope = replace(scope, ?, ?)", (old, new)),
                            ("UPDATE instance_types SET scope = replace(scope, ?, ?)", (old, new)),
                            ("UPDATE kv SET key = replace(key, ?, ?) WHERE key LIKE ?",
                             (old, new, "catalog_resolved_at:%"))):
        conn.execute(statement.replace("?", placeholder), args)


def shared_catalog_template(run_dir: Path, emulator_url: str, tmp: Path) -> Path:
    """This worker's catalogue template (CATALOG_TEMPLATES), from the run's one (the first worker to ask builds
    it, under a lock in run_dir that the run's workers share)."""
    state = run_dir / "catalog-template.json"
    with run_lock(run_dir, "catalog-template"):
        if not state.exists():
            (run_dir / "catalog").mkdir()
            built = build_catalog_template(emulator_url, run_dir / "catalog")
            state.write_text(json.dumps({"path": str(built), "url": emulator_url}))
            return built
    found = json.loads(state.read_text())
    template = tmp / "catalog-template.db"
    shutil.copyfile(found["path"], template)
    with closing(sqlite3.connect(template)) as conn, conn:
        rescope_catalog(conn, found["url"], emulator_url)
    CATALOG_TEMPLATES[emulator_url] = template
    return template


def shared_pg_catalog_template(cluster, run_dir: Path, emulator_url: str, tmp: Path) -> str:
    """The PostgreSQL twin of shared_catalog_template: this worker's template database, a copy of the run's."""
    import psycopg

    state = run_dir / "pg-catalog-template.json"
    with run_lock(run_dir, "pg-catalog-template"):
        if not state.exists():
            built = build_pg_catalog_template(cluster, emulator_url, tmp)
            state.write_text(json.dumps({"name": built, "url": emulator_url}))
            return built
        found = json.loads(state.read_text())
        url = cluster.new_database(found["name"])  # under the lock: a template must have no other session
    with psycopg.connect(url, autocommit=True) as conn:
        rescope_catalog(conn, found["url"], emulator_url, placeholder="%s")
    return url.rsplit("/", 1)[1]
