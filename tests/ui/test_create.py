"""The Create page in a real browser: a create through the form reaches running on the instances page without a
reload, a refusal shows the API's own message next to its field, and the estimate (cost and budget) shows before
anything is submitted, at 375 px too."""

import re

from playwright.sync_api import expect

from tests.ui.conftest import login, shoot


def test_a_create_through_the_form_shows_up_pending_then_running_without_a_reload(page, ui_server, emulator):
    login(page, ui_server, "alice")
    page.goto(f"{ui_server.url}/ui/create")
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
    login(page, ui_server, "alice")
    page.goto(f"{ui_server.url}/ui/create")
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
    login(page, ui_server, "alice")
    mark = len(ui_server.aws_calls())
    page.goto(f"{ui_server.url}/ui/create")
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
