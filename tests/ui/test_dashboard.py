"""The dashboard in a real browser (Playwright driving Debian's Chromium), one module: one server and one Chromium
for every page (each of those costs CPU that `make test`'s budget counts). Its sections run in order on the one
server and emulator; each looks at its own instances (the emulator is emptied once, by the first):

- budget, schedules and notifications: the gauge and each instance's share (a user sees only theirs), the spend
  per day with today's bar, a schedule's week view, notifications as an admin's page;
- the instance page: details, events and the tags editor (EC2 gets the tag), auto-stop and snooze moving the next
  stop, someone else's instance is a 404, the CPU chart loaded on request;
- the create form: a create reaches running on the instances page without a reload, a refusal shows the API's own
  message next to its field, the estimate shows before anything is submitted, at 375 px too;
- the instances page: live state without a reload, the bulk bar, who sees what, CSRF, 375 px, log out, and (last:
  it stops the server) an open live stream does not hold the server up.
"""

import re
import sqlite3
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import expect

from app.core.clock import parse_time
from tests.support.processes import TLS
from tests.support.seeding import adopt, launch_managed
from tests.ui.conftest import TOKENS, api_client, login, shoot


def enter(page, ui_server, name: str, path: str = "/ui"):
    """`name`'s session without the login page, then `path` in the browser: the token POSTed to /ui/login as
    the form posts it, through the page's own context (its cookie jar: the session cookie lands where a login
    through the form puts it). The login page and the instances page a login lands on are two page loads (a
    browser's render and the server's, and the live stream the instances page opens), and only three tests are
    about logging in: the first, the CSRF and the log-out tests log in through the form."""
    answer = page.context.request.post(f"{ui_server.url}/ui/login", form={"token": TOKENS[name][0]},
                                       max_redirects=0)
    assert answer.status == 303 and answer.headers["location"] == "/ui", answer.status
    return page.goto(f"{ui_server.url}{path}")


# -- budget, schedules, notifications ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def budget_boxes(ui_server, emulator):
    """Two running boxes: one of no owner (an admin's), one alice's (owner set in the store, as a create of hers
    would); and the schedule `office` (mon-fri 09:00-17:00 UTC)."""
    emulator.reset()
    with api_client(ui_server) as api:
        ids = launch_managed(emulator, 2, name="budget")
        adopt(api, ids)
        api.post("/schedules", json={"name": "office", "timezone": "UTC", "periods": [
            {"days": "mon-fri", "start": "09:00", "stop": "17:00"}]}).raise_for_status()
    with sqlite3.connect(ui_server.db_path) as db:
        db.execute("UPDATE instances SET owner = 'alice', rev = rev + 100 WHERE id = ?", (ids[1],))
    return ids


def test_the_gauge_shows_the_budget_and_a_row_per_instance_and_a_user_sees_only_hers(page, ui_server, budget_boxes):
    login(page, ui_server, "root")
    page.goto(f"{ui_server.url}/ui/budget")
    gauge = page.locator("section.gauge")
    expect(gauge).to_have_attribute("data-budget", "100000.00")  # BUDGET_USD of the test server
    expect(gauge.get_by_role("img")).to_have_attribute("aria-label", re.compile(r"of USD 100000\.00"))
    expect(gauge).to_contain_text("USD 100000.00")
    rows = page.locator("table.shares tr[data-instance-id]")
    expect(rows).to_have_count(2)
    assert {rows.nth(k).get_attribute("data-instance-id") for k in range(2)} == set(budget_boxes)
    shoot(page, "budget")

    page.context.clear_cookies()
    enter(page, ui_server, "alice", "/ui/budget")
    rows = page.locator("table.shares tr[data-instance-id]")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-instance-id") == budget_boxes[1]
    expect(page.locator("section.gauge")).to_contain_text("USD 100000.00")  # the totals are the account's


def test_the_spend_per_day_has_a_bar_for_today_that_adds_up_to_what_is_spent(page, ui_server, budget_boxes):
    page.set_viewport_size({"width": 375, "height": 800})
    with api_client(ui_server) as api:
        before = api.get("/budget").json()["spent_usd"]  # read before the page: a little less had been spent
    enter(page, ui_server, "root", "/ui/budget")
    today = datetime.now(UTC).date().isoformat()
    bars = page.locator("svg.days rect.bar")
    expect(bars.last).to_have_attribute("data-day", today)  # the period so far, ending with today
    bar = page.locator(f'svg.days rect.bar.today[data-day="{today}"]')
    expect(bar).to_have_count(1)
    assert float(bar.get_attribute("data-usd") or 0) > 0 and float(bar.get_attribute("height") or 0) > 0
    total = sum(float(bars.nth(k).get_attribute("data-usd") or 0) for k in range(bars.count()))
    with api_client(ui_server) as api:
        spent = api.get("/budget").json()["spent_usd"]  # read after the page: a little more has been spent
    assert before - 1e-4 <= total <= spent + 1e-4  # GET /budget rounds to 4 decimals
    page.get_by_text("Each day as a table").click()  # the text fallback
    expect(page.locator("table.day-table")).to_contain_text(f"{today} (today)")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scroll on a phone


def test_the_schedules_page_shows_the_week_of_office_hours(page, ui_server, budget_boxes):
    with api_client(ui_server) as api:
        api.patch(f"/instances/{budget_boxes[1]}", json={"schedule": "office"}).raise_for_status()
    enter(page, ui_server, "alice", "/ui/schedules")
    office = page.locator('section[data-schedule="office"]')
    expect(office.locator("[data-hours]")).to_have_text("40.0")
    expect(office.locator("table.week td.on")).to_have_count(40)  # mon-fri, 09 to 17: 5 x 8 hours
    expect(office.locator('tr[data-day="mon"] td[data-hour="10"]')).to_have_class(re.compile(r"\bon\b"))
    expect(office.locator('tr[data-day="mon"] td[data-hour="8"]')).to_have_class(re.compile(r"\boff\b"))
    expect(office.locator('tr[data-day="sat"] td[data-hour="10"]')).to_have_class(re.compile(r"\boff\b"))
    expect(office.locator("li[data-instance-id]")).to_have_count(1)  # hers, on the schedule
    expect(office.locator(f'li[data-instance-id="{budget_boxes[1]}"]')).to_be_visible()
    shoot(page, "schedules")
    page.set_viewport_size({"width": 375, "height": 800})
    expect(office.locator("table.week")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # the week fits a phone


def test_notifications_are_an_admins_page(page, ui_server, budget_boxes):
    enter(page, ui_server, "alice")
    expect(page.get_by_role("link", name="Notifications")).to_have_count(0)
    answer = page.goto(f"{ui_server.url}/ui/notifications")
    assert answer is not None and answer.status == 403
    expect(page.locator("[data-forbidden]")).to_contain_text("an admin's")
    page.context.clear_cookies()
    enter(page, ui_server, "root")
    page.get_by_role("link", name="Notifications").click()
    expect(page.get_by_role("heading", name="Notifications")).to_be_visible()
    expect(page.locator("[data-forbidden]")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("deliveries, newest first")


# -- the instance page ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def boxes(ui_server, emulator) -> tuple[str, list[str]]:
    """The instance page's box and the instances page's three, launched together and adopted by one sync (one
    `aws` process, not one per section): each section looks only at its own, and the budget section's counts
    are taken before these exist."""
    with api_client(ui_server) as api:
        [detail] = launch_managed(emulator, 1, name="detail-box")
        web = launch_managed(emulator, 3, name="web")
        adopt(api, [detail, *web])
    return detail, web


@pytest.fixture(scope="module")
def box(boxes) -> str:
    """One running box of root's (adopted: no owner, an admin's)."""
    return boxes[0]


def open_page(page, ui_server, instance_id: str, who: str = "root"):
    return enter(page, ui_server, who, f"/ui/instances/{instance_id}")


def test_the_page_shows_the_instance_and_its_events_and_the_tags_editor_sets_a_tag_in_ec2(page, ui_server, box,
                                                                                          emulator):
    open_page(page, ui_server, box)
    expect(page.get_by_role("heading", name="detail-box", level=1)).to_be_visible()
    expect(page.locator(f'[data-instance-id="{box}"]')).to_have_attribute("data-state", "running")
    expect(page.locator("tr.event").first).to_be_visible()  # its adoption at least
    page.get_by_label("Key").fill("Team")
    page.get_by_label("Value").fill("web")
    page.get_by_role("button", name="Set tag").click()
    expect(page.locator("#note-tags")).to_have_text("Set Team.")
    expect(page.locator('li[data-tag="Team"]')).to_contain_text("Team = web")
    assert {"Key": "Team", "Value": "web"} in emulator.instances()[box]["Tags"]
    # A reserved key: the API's own refusal, next to the editor.
    page.get_by_label("Key").fill("ManagedBy")
    page.get_by_role("button", name="Set tag").click()
    expect(page.locator("#err-tags")).to_contain_text("reserved")
    expect(page.locator("#err-tags")).to_have_attribute("data-status", "400")
    expect(page.get_by_label("Key")).to_have_value("ManagedBy")  # what was typed stays, to be corrected
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy the ssh command").press("Enter")  # from the keyboard
    expect(page.locator("#ssh-command-copied")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()").startswith("ssh ")
    shoot(page, "instance")


def test_auto_stop_then_snooze_moves_the_shown_next_stop_by_the_minutes(page, ui_server, box):
    open_page(page, ui_server, box)
    page.get_by_label("Auto-stop after").fill("120")
    page.get_by_role("button", name="Set auto-stop").click()
    expect(page.locator("#note-auto_stop")).to_be_visible()
    with api_client(ui_server) as api:
        before = api.get(f"/instances/{box}").json()["next_action"]
    assert before["action"] == "stop" and before["source"] == "auto_stop"
    expect(page.locator("#next-action")).to_have_attribute("data-at", before["at"])
    page.get_by_label("Snooze the next stop by").fill("30")
    page.get_by_role("button", name="Snooze").click()
    expect(page.locator("#note-snooze")).to_be_visible()
    with api_client(ui_server) as api:
        after = api.get(f"/instances/{box}").json()["next_action"]
    assert (parse_time(after["at"]) - parse_time(before["at"])).total_seconds() == 30 * 60
    expect(page.locator("#next-action")).to_have_attribute("data-at", after["at"])
    expect(page.locator("tr.event").first).to_have_attribute("data-action", "snoozed")  # newest first


def test_a_user_gets_404_for_someone_elses_instance(page, ui_server, box):
    response = open_page(page, ui_server, box, "alice")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="No such instance")).to_be_visible()
    expect(page.locator(f'[data-instance-id="{box}"]')).to_have_count(0)


def test_the_cpu_chart_is_loaded_only_when_asked_and_375_pixels_do_not_scroll_sideways(page, ui_server, box):
    page.set_viewport_size({"width": 375, "height": 800})
    open_page(page, ui_server, box)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    expect(page.locator("#cpu")).to_be_empty()
    page.get_by_role("button", name="Show CPU (last hour)").click()
    expect(page.locator("#cpu")).to_contain_text(re.compile("No datapoints yet"))  # moto keeps no datapoints


# -- the create form ----------------------------------------------------------------------------------------------
def test_a_create_through_the_form_shows_up_pending_then_running_without_a_reload(page, ui_server, emulator):
    enter(page, ui_server, "alice", "/ui/create")
    page.get_by_label("Name").fill("from-the-form")
    page.get_by_label("SSH access from").fill("none")  # no security group rule to add: one `aws` process fewer
    page.get_by_label("Auto-stop after").fill("90")
    page.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url(f"{ui_server.url}/ui")
    row = page.locator("tr[data-instance-id]", has_text="from-the-form")
    expect(row).to_have_count(1)
    # The live stream brings the sweep's state: no reload.
    expect(row).to_have_attribute("data-state", "running", timeout=20_000)
    instance_id = row.get_attribute("data-instance-id")
    launched = emulator.instances()[instance_id]
    assert {t["Key"]: t["Value"] for t in launched["Tags"]}["Name"] == "from-the-form"
    assert launched["InstanceType"] == "t3.micro"


def test_a_refused_create_shows_the_apis_message_next_to_the_field(page, ui_server, emulator):
    enter(page, ui_server, "alice", "/ui/create")
    before = set(emulator.instances())
    page.get_by_label("Name").fill("too-big")
    page.get_by_label("SSH access from").fill("none")
    storage = page.get_by_label(re.compile("^Storage"))
    storage.evaluate("input => input.removeAttribute('max')")  # what a browser would not stop
    storage.fill("31")
    page.get_by_role("button", name="Create", exact=True).click()
    message = page.locator("#err-storage_gb")
    expect(message).to_have_text("storage_gb must be between 8 and 30 GB (the free-tier EBS allowance is 30 GB); "
                                 "got 31.")
    expect(storage).to_have_attribute("aria-invalid", "true")
    expect(storage).to_have_value("31")  # the form keeps what was typed
    expect(page.locator("#err-name")).to_have_count(0)
    # A schema problem is the API's 422 wording, at its own field.
    page.get_by_label("Name").fill("bad$name")
    storage.fill("8")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("#err-name")).to_contain_text("letters, digits")
    expect(page.locator("#err-storage_gb")).to_have_count(0)
    assert set(emulator.instances()) == before  # nothing launched


def test_the_estimate_shows_before_submitting_and_follows_the_form_at_375_pixels(page, ui_server):
    page.set_viewport_size({"width": 375, "height": 900})
    mark = len(ui_server.aws_calls())
    enter(page, ui_server, "alice", "/ui/create")
    estimate = page.locator("#estimate")
    expect(estimate.locator("[data-estimate='fits']")).to_be_visible()
    default_month = estimate.locator("[data-month-usd]").inner_text()
    assert re.match(r"USD \d+\.\d{4}", default_month)
    expect(estimate.locator("[data-remaining]")).to_contain_text("BUDGET_USD")
    # A one-hour auto-stop: the run and the month both cost less, and the stop is an hour away.
    page.get_by_label("Auto-stop after").fill("60")
    expect(estimate).to_contain_text("in 1 h 0 min, auto-stop", timeout=5_000)
    assert estimate.locator("[data-month-usd]").inner_text() != default_month
    # Over the free-tier allowance: the estimate says so before anything is sent.
    page.get_by_label(re.compile("^Storage")).fill("40")
    expect(estimate.locator("[data-estimate='refused']")).to_contain_text("storage_gb must be between 8 and 30 GB")
    page.get_by_label(re.compile("^Storage")).fill("8")
    expect(estimate.locator("[data-estimate='fits']")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    # The page and its estimates read the cached catalogue, the prices and the ledger: no `aws` process (a
    # sweep's describe-instances aside, which is not theirs).
    assert [call for call in ui_server.aws_calls()[mark:] if "describe-instances" not in call] == []
    shoot(page, "create")


# -- the instances page (last: its last test stops the server) ----------------------------------------------------
@pytest.fixture(scope="module")
def page_boxes(ui_server, boxes) -> list[str]:
    """Three running boxes: two of no owner (an admin's), one carol's (owner set in the store, as a create of
    hers would)."""
    ids = boxes[1]
    with sqlite3.connect(ui_server.db_path) as db:
        db.execute("UPDATE instances SET owner = 'carol', rev = rev + 100 WHERE id = ?", (ids[2],))
    return ids


def test_the_bulk_bar_stops_two_and_each_row_says_so_and_the_rows_follow_without_a_reload(page, ui_server, page_boxes,
                                                                                        emulator):
    enter(page, ui_server, "root")
    for instance_id in page_boxes[:2]:
        page.locator(f"#sel-{instance_id}").check()
    page.get_by_role("button", name="Stop", exact=True).click()
    for instance_id in page_boxes[:2]:
        expect(page.locator(f"#out-{instance_id}")).to_have_text(re.compile(r"stop: accepted"))
        # The live stream brings the new state: no reload.
        expect(page.locator(f'tr[data-instance-id="{instance_id}"]')).to_have_attribute(
            "data-state", re.compile("stopping|stopped"), timeout=15_000)
    expect(page.locator(f'tr[data-instance-id="{page_boxes[2]}"]')).to_have_attribute("data-state", "running")
    assert {emulator.instances()[i]["State"]["Name"] for i in page_boxes[:2]} <= {"stopping", "stopped"}
    shoot(page, "instances")


def test_a_user_sees_only_their_own_instances(page, ui_server, page_boxes):
    enter(page, ui_server, "carol")  # alice owns boxes of the sections above
    rows = page.locator("tr[data-instance-id]")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-instance-id") == page_boxes[2]
    expect(page.get_by_role("columnheader", name="Owner")).to_have_count(0)  # the owner column is an admin's


def test_a_post_without_the_csrf_token_is_403(page, ui_server, page_boxes):
    login(page, ui_server, "root")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    session = next(c for c in page.context.cookies() if c["name"] == "ec2cl_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    with httpx.Client(base_url=ui_server.url, cookies=cookies, verify=TLS) as client:
        refused = client.post("/ui/actions", data={"action": "stop", "ids": page_boxes[2]})
        assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
        forged = client.post("/ui/actions", data={"action": "stop", "ids": page_boxes[2], "csrf_token": "0" * 64})
        assert forged.status_code == 403
    with httpx.Client(base_url=ui_server.url, verify=TLS) as stranger:  # no session: the login page
        assert stranger.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"


def test_at_375_pixels_the_instances_page_does_not_scroll_sideways(page, ui_server, page_boxes):
    page.set_viewport_size({"width": 375, "height": 800})
    enter(page, ui_server, "root")
    expect(page.locator("tr[data-instance-id]").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shoot(page, "instances-375px")


def test_log_out_ends_the_session(page, ui_server, page_boxes):
    login(page, ui_server, "alice")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{ui_server.url}/ui/login")
    assert not [c for c in page.context.cookies() if c["name"] == "ec2cl_session"]
    page.goto(f"{ui_server.url}/ui")
    expect(page).to_have_url(f"{ui_server.url}/ui/login")  # no session: back to the login page
    page.get_by_label("Your token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid here.")


def test_nothing_selected_is_said_in_the_bar(page, ui_server, page_boxes):
    enter(page, ui_server, "root")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#bulk-notice")).to_have_text("Select at least one instance first.")


def test_an_open_live_stream_does_not_hold_the_server_up_when_it_is_asked_to_stop(ui_server, page_boxes):
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
