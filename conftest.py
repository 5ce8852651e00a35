"""Fixtures shared by the suites: a real moto server per session and the real API server per module.

The harness itself (processes, emulator, server, AWS_CLI shim) lives in tests/support.
"""

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

import app.lifespan  # noqa: F401 - installs the domains' settings checks (PRICES_FILE, API_TOKENS_FILE, NOTIFY_*), as the server does
from app.store import Database
from tests.support.emulator import Emulator
from tests.support.postgres import shared_cluster, stop_shared_cluster
from tests.support.processes import AWS_CLI_V1, TLS, aws_cli_v2
from tests.support.server import ApiServer, shared_catalog_template, shared_pg_catalog_template, synced_client

# What the xdist workers of one run share (one PostgreSQL cluster, the catalogue templates): a directory the
# controlling process makes before the workers start (they inherit its environment) and removes at the end.
RUN_DIR = "EC2CL_TEST_RUN_DIR"


def run_dir() -> Path:
    return Path(os.environ[RUN_DIR])


def pytest_configure(config) -> None:
    if not hasattr(config, "workerinput"):  # the controlling process (or the only one)
        os.environ[RUN_DIR] = tempfile.mkdtemp(prefix="ec2cl-run-")
    config.addinivalue_line("markers", "integration: starts real processes (emulator, server, browser); "
                                       "make test-fast leaves these out")


def pytest_sessionfinish(session) -> None:
    """The controlling process, once every worker is done: the run's PostgreSQL cluster stops, its files go."""
    if not hasattr(session.config, "workerinput") and os.environ.get(RUN_DIR):
        stop_shared_cluster(run_dir())
        shutil.rmtree(run_dir(), ignore_errors=True)


def pytest_collection_modifyitems(config, items) -> None:
    """Every test that needs the emulator is an integration test; `make test-fast` runs the others. The tests
    run in the order of the command line's paths (pytest 8 collects them in one alphabetical walk): make test
    names the slowest modules first (SLOW_FIRST), so that xdist hands them out first."""
    named = [(config.invocation_params.dir / arg.split("::", 1)[0]).resolve() for arg in config.args]

    def rank(item) -> int:
        path = Path(str(item.path)).resolve()
        return next((i for i, arg in enumerate(named) if path == arg or arg in path.parents), len(named))

    items.sort(key=rank)  # stable: a module keeps its own order
    for item in items:
        if "emulator" in item.fixturenames:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    emu = Emulator(tmp_path_factory.mktemp("moto"))
    emu.reset()
    shared_catalog_template(run_dir(), emu.url, tmp_path_factory.mktemp("catalog"))
    yield emu
    emu.close()


@pytest.fixture(scope="session")
def pg_cluster():
    """The run's private PostgreSQL cluster (Debian's postgresql package), one for every xdist worker: started by
    the first test that needs one, stopped when the run ends (pytest_sessionfinish)."""
    return shared_cluster(run_dir())


@pytest.fixture(scope="session")
def pg_catalog_template(pg_cluster, emulator, tmp_path_factory) -> str:
    """A PostgreSQL database holding only the emulator's AMI catalogue: a new server's database is a copy."""
    return shared_pg_catalog_template(pg_cluster, run_dir(), emulator.url, tmp_path_factory.mktemp("pg-catalog"))


def db_engine(request) -> str:
    """The engine a test module runs on: DB_ENGINE = "postgres" in a module runs it on PostgreSQL (the
    modules under tests/postgres/ import a suite's tests and set it); SQLite otherwise."""
    return getattr(request.module, "DB_ENGINE", "sqlite")


@pytest.fixture
def database_env(request) -> dict[str, str]:
    """Settings giving a server its database on the module's engine: a fresh PostgreSQL database holding
    the catalogue, or nothing (ApiServer's own SQLite file)."""
    if db_engine(request) != "postgres":
        return {}
    cluster = request.getfixturevalue("pg_cluster")
    return {"DATABASE_URL": cluster.new_database(request.getfixturevalue("pg_catalog_template"))}


@pytest.fixture
def new_db(request, tmp_path):
    """An empty, migrated store on the module's engine."""
    if db_engine(request) == "postgres":
        db = Database(request.getfixturevalue("pg_cluster").new_database())
    else:
        db = Database(tmp_path / "x.db")
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture(scope="session", params=["v1", "v2"])
def aws_cli_bin(request):
    """Each AWS CLI the project supports, in turn: the venv's v1 and Debian's v2."""
    return AWS_CLI_V1 if request.param == "v1" else aws_cli_v2()


@pytest.fixture
def fresh_emulator(emulator):
    """The emulator with nothing in it but the public AMIs and our key pair."""
    emulator.reset()
    return emulator


@pytest.fixture(scope="module")
def api_server(emulator, tmp_path_factory, request):
    """The module's server; a module sets SERVER_ENV (settings as environment variables) to tune it."""
    env = getattr(request.module, "SERVER_ENV", {})
    if db_engine(request) == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        env = {**env, "DATABASE_URL": cluster.new_database(request.getfixturevalue("pg_catalog_template"))}
    server = ApiServer(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]), emulator.url, **env)
    yield server
    server.stop()


@pytest.fixture
def api(api_server, fresh_emulator):
    """An httpx client on the module's server; the emulator is fresh and the record caught up."""
    with synced_client(api_server) as client:
        yield client


@pytest.fixture
def reader(api_server):
    """An httpx client on the module's server for a test that changes nothing in EC2 and depends on nothing
    there (a refusal before any `aws` call, the docs, a 404), or that looks only at the instances it made or
    seeded: no emulator reset and no sync, which cost a reset and an `aws` process per test. No faults are
    injected."""
    api_server.set_faults()
    with httpx.Client(base_url=api_server.url, timeout=60, verify=TLS) as client:
        yield client
