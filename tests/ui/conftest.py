"""The dashboard's browser tests: Playwright for Python (pytest-playwright) driving Debian's Chromium (make test
installs it; `playwright install` cannot download browsers here) against a real server and the sandbox emulator.

One server per module, with tokens per person (root an admin, alice and bob users); each test logs in through the
login page. Every page a test visits can be saved with `shoot(page, name)` under reports/screenshots/ (the
test artifacts; docs/images/ holds the ones the README shows)."""

import hashlib
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.support.processes import ROOT, TLS
from tests.support.server import ApiServer

CHROMIUM = Path("/usr/lib/chromium/chromium")  # /usr/bin/chromium is a shell wrapper: Playwright needs the binary
SCREENSHOTS = ROOT / "reports" / "screenshots"
TOKENS = {"root": ("root-token-0123456789abcdef", "admin"), "alice": ("alice-token-0123456789abcdef", "user"),
          "bob": ("bob-token-0123456789abcdef", "user"), "carol": ("carol-token-0123456789abcdef", "user")}


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict:
    assert CHROMIUM.exists(), "Debian's chromium is required (make test installs it)"
    return {"executable_path": str(CHROMIUM), "args": [
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage"]}


# Playwright's sync API runs an event loop in this thread for as long as it is started: pytest-playwright starts it
# once per session, so every later test of the same xdist worker that calls asyncio.run() failed ("cannot be called
# from a running event loop"). Here it lives for one module: started by the module's first browser test, stopped
# after its last (one Chromium per module; make test hands these modules out early).
@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="module")
def browser_type(playwright, browser_name):
    return getattr(playwright, browser_name or "chromium")


@pytest.fixture(scope="module")
def launch_browser(browser_type_launch_args, browser_type):
    def launch(**kwargs):
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})
    return launch


@pytest.fixture(scope="module")
def browser(launch_browser):
    launched = launch_browser()
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def browser_context_args() -> dict:
    return {}


def tokens_toml() -> str:
    return "".join(f'[[users]]\nname = "{name}"\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
                   f'role = "{role}"\n\n' for name, (token, role) in TOKENS.items())


@pytest.fixture(scope="module")
def ui_server(emulator, tmp_path_factory, request):
    """The module's server, with tokens per person; a module sets UI_SERVER_ENV to tune it."""
    tmp = tmp_path_factory.mktemp("ui")
    (tmp / "tokens.toml").write_text(tokens_toml())
    env = getattr(request.module, "UI_SERVER_ENV", {})
    server = ApiServer(tmp, emulator.url, API_TOKENS_FILE=str(tmp / "tokens.toml"), **env)
    yield server
    server.stop()


def api_client(server: ApiServer, name: str = "root") -> httpx.Client:
    """The REST API as `name` (for setting up what a page then shows)."""
    return httpx.Client(base_url=server.url, timeout=60, verify=TLS,
                        headers={"Authorization": f"Bearer {TOKENS[name][0]}"})


def login(page, server: ApiServer, name: str = "root") -> None:
    """Log in through the login page, as a person would."""
    page.goto(f"{server.url}/ui/login")
    page.get_by_label("Your token").fill(TOKENS[name][0])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/ui")


def shoot(page, name: str) -> Path:
    """Save the page as it is (a test artifact)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
