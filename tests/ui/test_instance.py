"""The Instance page in a real browser: details, events and the tags editor (EC2 gets the tag), auto-stop and
snooze moving the next stop, someone else's instance is a 404, and the CPU chart loaded on request."""

import re

import pytest
from playwright.sync_api import expect

from app.core.clock import parse_time
from tests.support.seeding import adopt, launch_managed
from tests.ui.conftest import api_client, login, shoot


@pytest.fixture(scope="module")
def box(ui_server, emulator):
    """One running box of root's (adopted: no owner, an admin's)."""
    with api_client(ui_server) as api:
        ids = launch_managed(emulator, 1, name="detail-box")
        adopt(api, ids)
    return ids[0]


def open_page(page, ui_server, instance_id: str, who: str = "root"):
    login(page, ui_server, who)
    return page.goto(f"{ui_server.url}/ui/instances/{instance_id}")


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
