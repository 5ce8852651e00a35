"""The budget, schedules and notifications pages in a real browser: the gauge and each instance's share (a user sees
only theirs), the spend per day with today's bar, a schedule's week view, and notifications as an admin's page."""

import re
import sqlite3
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from tests.support.seeding import adopt, launch_managed
from tests.ui.conftest import api_client, login, shoot


@pytest.fixture(scope="module")
def boxes(ui_server, emulator):
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


def test_the_gauge_shows_the_budget_and_a_row_per_instance_and_a_user_sees_only_hers(page, ui_server, boxes):
    login(page, ui_server, "root")
    page.goto(f"{ui_server.url}/ui/budget")
    gauge = page.locator("section.gauge")
    expect(gauge).to_have_attribute("data-budget", "100000.00")  # BUDGET_USD of the test server
    expect(gauge.get_by_role("img")).to_have_attribute("aria-label", re.compile(r"of USD 100000\.00"))
    expect(gauge).to_contain_text("USD 100000.00")
    rows = page.locator("table.shares tr[data-instance-id]")
    expect(rows).to_have_count(2)
    assert {rows.nth(k).get_attribute("data-instance-id") for k in range(2)} == set(boxes)
    shoot(page, "budget")

    page.context.clear_cookies()
    login(page, ui_server, "alice")
    page.goto(f"{ui_server.url}/ui/budget")
    rows = page.locator("table.shares tr[data-instance-id]")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-instance-id") == boxes[1]
    expect(page.locator("section.gauge")).to_contain_text("USD 100000.00")  # the totals are the account's


def test_the_spend_per_day_has_a_bar_for_today_that_adds_up_to_what_is_spent(page, ui_server, boxes):
    page.set_viewport_size({"width": 375, "height": 800})
    login(page, ui_server, "root")
    with api_client(ui_server) as api:
        before = api.get("/budget").json()["spent_usd"]  # read before the page: a little less had been spent
    page.goto(f"{ui_server.url}/ui/budget")
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


def test_the_schedules_page_shows_the_week_of_office_hours(page, ui_server, boxes):
    with api_client(ui_server) as api:
        api.patch(f"/instances/{boxes[1]}", json={"schedule": "office"}).raise_for_status()
    login(page, ui_server, "alice")
    page.goto(f"{ui_server.url}/ui/schedules")
    office = page.locator('section[data-schedule="office"]')
    expect(office.locator("[data-hours]")).to_have_text("40.0")
    expect(office.locator("table.week td.on")).to_have_count(40)  # mon-fri, 09 to 17: 5 x 8 hours
    expect(office.locator('tr[data-day="mon"] td[data-hour="10"]')).to_have_class(re.compile(r"\bon\b"))
    expect(office.locator('tr[data-day="mon"] td[data-hour="8"]')).to_have_class(re.compile(r"\boff\b"))
    expect(office.locator('tr[data-day="sat"] td[data-hour="10"]')).to_have_class(re.compile(r"\boff\b"))
    expect(office.locator("li[data-instance-id]")).to_have_count(1)  # hers, on the schedule
    expect(office.locator(f'li[data-instance-id="{boxes[1]}"]')).to_be_visible()
    shoot(page, "schedules")
    page.set_viewport_size({"width": 375, "height": 800})
    expect(office.locator("table.week")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # the week fits a phone


def test_notifications_are_an_admins_page(page, ui_server, boxes):
    login(page, ui_server, "alice")
    expect(page.get_by_role("link", name="Notifications")).to_have_count(0)
    answer = page.goto(f"{ui_server.url}/ui/notifications")
    assert answer is not None and answer.status == 403
    expect(page.locator("[data-forbidden]")).to_contain_text("an admin's")
    page.context.clear_cookies()
    login(page, ui_server, "root")
    page.get_by_role("link", name="Notifications").click()
    expect(page.get_by_role("heading", name="Notifications")).to_be_visible()
    expect(page.locator("[data-forbidden]")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("deliveries, newest first")
