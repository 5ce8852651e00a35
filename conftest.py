"""Fixtures shared by the suites: a real moto server per session and the real API server per module.

The harness itself (processes, emulator, server, AWS_CLI shim) lives in tests/support.
"""

import pytest

from tests.support.emulator import Emulator
from tests.support.processes import AWS_CLI_V1, aws_cli_v2
from tests.support.server import ApiServer, build_catalog_template, synced_client


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "integration: starts real processes (emulator, server, browser); "
                                       "make test-fast leaves these out")


def pytest_collection_modifyitems(items) -> None:
    """Every test that needs the emulator is an integration test; `make test-fast` runs the others."""
    for item in items:
        if "emulator" in item.fixturenames:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    emu = Emulator(tmp_path_factory.mktemp("moto"))
    emu.reset()
    build_catalog_template(emu.url, tmp_path_factory.mktemp("catalog"))
    yield emu
    emu.close()


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
    server = ApiServer(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]), emulator.url,
                       **getattr(request.module, "SERVER_ENV", {}))
    yield server
    server.stop()


@pytest.fixture
def api(api_server, fresh_emulator):
    """An httpx client on the module's server; the emulator is fresh and the record caught up."""
    with synced_client(api_server) as client:
        yield client
