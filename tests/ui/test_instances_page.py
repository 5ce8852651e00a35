"""The instances page in a real browser: live state without a reload, the bulk bar, who sees what, CSRF, and a
375-pixel-wide screen."""

import re
import threading
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.processes import TLS
from tests.support.seeding import adopt, launch_managed
from tests.ui.conftest import TOKENS, api_client, login, shoot


@pytest.fixture(scope="module")
def boxes(ui_server, emulator):
    """Three running boxes: two of no owner (an admin's), one alice's (owner set in the store, as a create of
    hers would)."""
    emulator.reset()
    with api_client(ui_server) as api:
        ids = launch_managed(emulator, 3, name="web")
        adopt(api, ids)
    import sqlite3
    with sqlite3.connect(ui_server.db_path) as db:
        db.execute("UPDATE instances SET owner = 'alice', rev = rev + 100 WHERE id = ?", (ids[2],))
    return ids


def test_the_bulk_bar_stops_two_and_each_row_says_so_and_the_rows_follow_without_a_reload(page, ui_server, boxes,
                                                                                        emulator):
    login(page, ui_server, "root")
    for instance_id in boxes[:2]:
        page.locator(f"#sel-{instance_id}").check()
    page.get_by_role("button", name="Stop", exact=True).click()
    for instance_id in boxes[:2]:
        expect(page.locator(f"#out-{instance_id}")).to_have_text(re.compile(r"stop: accepted"))
        # The live stream brings the new state: no reload.
        expect(page.locator(f'tr[data-instance-id="{instance_id}"]')).to_have_attribute(
            "data-state", re.compile("stopping|stopped"), timeout=15_000)
    expect(page.locator(f'tr[data-instance-id="{boxes[2]}"]')).to_have_attribute("data-state", "running")
    assert {emulator.instances()[i]["State"]["Name"] for i in boxes[:2]} <= {"stopping", "stopped"}
    shoot(page, "instances")


def test_a_user_sees_only_their_own_instances(page, ui_server, boxes):
    login(page, ui_server, "alice")
    rows = page.locator("tr[data-instance-id]")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-instance-id") == boxes[2]
    expect(page.get_by_role("columnheader", name="Owner")).to_have_count(0)  # the owner column is an admin's


def test_a_post_without_the_csrf_token_is_403(page, ui_server, boxes):
    login(page, ui_server, "root")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    session = next(c for c in page.context.cookies() if c["name"] == "ec2cl_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    with httpx.Client(base_url=ui_server.url, cookies=cookies, verify=TLS) as client:
        refused = client.post("/ui/actions", data={"action": "stop", "ids": boxes[2]})
        assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
        forged = client.post("/ui/actions", data={"action": "stop", "ids": boxes[2], "csrf_token": "0" * 64})
        assert forged.status_code == 403
    with httpx.Client(base_url=ui_server.url, verify=TLS) as stranger:  # no session: the login page
        assert stranger.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"


def test_at_375_pixels_the_instances_page_does_not_scroll_sideways(page, ui_server, boxes):
    page.set_viewport_size({"width": 375, "height": 800})
    login(page, ui_server, "root")
    expect(page.locator("tr[data-instance-id]").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shoot(page, "instances-375px")


def test_log_out_ends_the_session(page, ui_server, boxes):
    login(page, ui_server, "alice")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{ui_server.url}/ui/login")
    assert not [c for c in page.context.cookies() if c["name"] == "ec2cl_session"]
    page.goto(f"{ui_server.url}/ui")
    expect(page).to_have_url(f"{ui_server.url}/ui/login")  # no session: back to the login page
    page.get_by_label("Your token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid here.")


def test_nothing_selected_is_said_in_the_bar(page, ui_server, boxes):
    login(page, ui_server, "root")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#bulk-notice")).to_have_text("Select at least one instance first.")


def test_an_open_live_stream_does_not_hold_the_server_up_when_it_is_asked_to_stop(ui_server, boxes):
    """The module's last test: it stops the server. uvicorn waits for open responses before it stops, and a
    dashboard tab's stream never ends by itself: the server ends them on SIGTERM."""
    client = httpx.Client(base_url=ui_server.url, timeout=30, verify=TLS)
    client.post("/ui/login", data={"token": TOKENS["root"][0]})
    opened = threading.Event()

    def listen() -> None:
        with client.stream("GET", "/ui/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: rows"):
                    opened.set()

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    assert opened.wait(15), "the live stream sent no rows"
    started = time.monotonic()
    ui_server.stop()
    assert time.monotonic() - started < 5
    reader.join(5)
    assert not reader.is_alive()  # the stream ended with the server
