"""Swagger UI at /docs renders offline, in a real headless Chromium."""

import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import ApiServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory):
    # No emulator needed to render the docs: point at a closed port, the page must not care.
    server = ApiServer(tmp_path_factory.mktemp("docs"), "http://127.0.0.1:9")
    yield server
    server.stop()


def dump_dom(url: str, screenshot: str | None = None) -> str:
    assert CHROMIUM, "Debian's chromium is required (.ci/run installs it)"
    with tempfile.TemporaryDirectory() as profile:
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                # Every host but 127.0.0.1 resolves to nothing: a CDN reference could not load.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                f"--user-data-dir={profile}", "--virtual-time-budget=15000"]
        args += [f"--screenshot={screenshot}", "--window-size=1280,1000"] if screenshot else ["--dump-dom"]
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=120)
    return done.stdout


def test_swagger_ui_renders_every_operation_offline(docs_server):
    dom = dump_dom(f"{docs_server.url}/docs")
    operations = re.findall(r'class="opblock opblock-(get|post|delete)', dom)
    # health, list, create, sync, get, events, start, stop, delete
    assert len(operations) >= 9, dom[:2000]
    assert "/instances/{instance_id}/start" in dom
    assert "EC2 Creator Local" in dom
