"""Swagger UI at /docs renders offline, in a real headless Chromium."""

import contextlib
import functools
import http.server
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import ApiServer

pytestmark = pytest.mark.integration  # real processes: make test-fast leaves these out

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


class Browser:
    """Headless Chromium driven over the DevTools protocol: navigate, then run a page's script."""

    def __init__(self, profile: str, resolver_rules: str) -> None:
        from websockets.sync.client import connect

        assert CHROMIUM, "Debian's chromium is required (make test installs it)"
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--host-resolver-rules={resolver_rules}", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=None))
        self.seq = 0
        self.call("Page.enable")

    def call(self, method: str, **params) -> dict:
        self.seq += 1
        self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.seq:
                return message.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.loaded()

    def loaded(self) -> None:
        while json.loads(self.ws.recv(timeout=30)).get("method") != "Page.loadEventFired":
            pass

    def run(self, script: str):
        result = self.call("Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        self._stack.close()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def page_elsewhere(tmp_path):
    """Another web site (http://evil.example:PORT/, resolved to this machine) that the user visits."""
    (tmp_path / "index.html").write_text("<html><body>cute cats</body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield site.server_address[1]
    site.shutdown()


def test_swagger_ui_can_act_and_other_sites_cannot(emulator, fresh_emulator, tmp_path, page_elsewhere):
    server = ApiServer(tmp_path, emulator.url, RECONCILE_INTERVAL_SECONDS="3600")
    profile = tempfile.mkdtemp()
    browser = Browser(profile, "MAP evil.example 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    try:
        created = httpx.post(f"{server.url}/instances", timeout=60,
                             json={"name": "victim", "ami": "amazon-linux-2023", "instance_type": "t3.micro"})
        victim = created.json()["id"]

        browser.open(f"{server.url}/docs")  # Swagger UI, same origin: its requests are served
        assert browser.run("fetch('/instances/sync', {method: 'POST'}).then(r => r.status)") == 200
        assert browser.run("fetch('/instances').then(r => r.json()).then(b => b.instances.length)") == 1

        before = len(server.aws_calls())
        browser.open(f"http://evil.example:{page_elsewhere}/")  # a page of another site posts to us
        sent = browser.run(f"fetch('{server.url}/instances/{victim}/stop', {{method: 'POST', mode: 'no-cors'}})"
                           ".then(r => r.type, e => 'error')")
        assert sent == "opaque"  # the browser did send it
        browser.run(f"const f = document.createElement('form'); f.method = 'POST'; "  # a plain HTML form
                    f"f.action = '{server.url}/instances/{victim}/stop'; document.body.appendChild(f); f.submit()")
        browser.loaded()

        browser.open(f"http://evil.example:{server.port}/docs")  # DNS rebinding: evil.example now means us
        assert browser.run("fetch('/instances').then(r => r.status)") == 403
        assert browser.run(f"fetch('/instances/{victim}/stop', {{method: 'POST'}}).then(r => r.status)") == 403

        # All three stop requests reached the server and were refused; nothing reached EC2.
        assert server.server_log().count(f'"POST /instances/{victim}/stop HTTP/1.1" 403') == 3
        assert server.mutations_since(before) == []
        assert fresh_emulator.instances()[victim]["State"]["Name"] == "running"
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
        server.stop()
