"""Notifications end to end: the real server, a real SMTP server (aiosmtpd) and a real HTTP receiver for
Apprise's json:// on 127.0.0.1, the real emulator. Mail and webhooks arrive once per event, survive a
channel that is down and a kill -9, and never carry a secret out."""

import json
import os
import signal
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.processes import TLS, free_port, wait_quiet, wait_until
from tests.support.receivers import MailServer, WebhookReceiver, wait_for
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer

pytestmark = pytest.mark.integration

BODY = {"name": "notified", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}
# A create whose SSH rule nothing here looks at: one `aws` process fewer (authorize-security-group-ingress).
# The first test keeps the rule, as its created mail shows the SSH line of an instance one can log in to.
NO_SSH = BODY | {"ssh_from": "none"}
TOKEN = "s3cret-hook-token-77"


@pytest.fixture(scope="module")
def mail():
    server = MailServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hook():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def server(emulator, mail, hook, tmp_path_factory):
    """The module's server. EC2 is reset once, before it starts: each test on it looks only at the instance it
    made or launched, by id (a reset and a sync before each cost an `aws` process, and the sweep then looked up
    what the reset took away)."""
    emulator.reset()
    srv = ApiServer(tmp_path_factory.mktemp("notifications"), emulator.url, NOTIFY_RETRY_MAX_SECONDS="1",
                    NOTIFY_URLS=hook.url(f"hook/{TOKEN}"), **mail.settings())
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as client:
        yield client


def about(subjects: list[str], instance_id: str) -> list[str]:
    return [s for s in subjects if f"({instance_id})" in s]


def mails_for(mail: MailServer, instance_id: str) -> list[str]:
    return about(mail.subjects(), instance_id)


def hooks_for(hook: WebhookReceiver, instance_id: str) -> list[str]:
    return about(hook.titles(), instance_id)


def recorded(api: httpx.Client, instance_id: str, state: str) -> None:
    wait_until(lambda: api.get(f"/instances/{instance_id}").json()["state"] == state, timeout=30, interval=0.2)


def settle(seconds: float = 2.5) -> None:
    """Let any extra delivery that should not happen have its chance (the sender polls every second)."""
    time.sleep(seconds)


def test_create_stop_delete_each_deliver_one_mail_and_one_webhook(api, mail, hook, emulator):
    created = api.post("/instances", json=BODY)
    assert created.status_code == 201, created.text
    box = created.json()["id"]
    # Each step waits for the sweep its request asked for to record the outcome (no sync of its own: one `aws`
    # process fewer each): the stop and the delete act on what that sweep recorded, and no sweep adds a mail.
    recorded(api, box, "running")
    assert api.post(f"/instances/{box}/stop").status_code == 202
    recorded(api, box, "stopped")
    assert api.delete(f"/instances/{box}").status_code == 202
    recorded(api, box, "terminated")
    wait_for(lambda: len(mails_for(mail, box)), 3)
    wait_for(lambda: len(hooks_for(hook, box)), 3)
    settle()
    subjects = mails_for(mail, box)
    assert [s.rsplit(") ", 1)[1] for s in subjects] == ["created", "stopped", "deleted"], subjects
    assert hooks_for(hook, box) == subjects
    created_mail = next(m for m in mail.messages if f"({box}) created" in str(m["Subject"]))
    text = created_mail.get_content()
    for part in (f"Instance: {box}", "Name: notified", "State: ", "Region: us-east-1", "Public IP: ",
                 "SSH: ", "Cost so far this month: USD ", "Time: 20", "Event: create"):
        assert part in text, text
    assert created_mail["To"] == "dev@example.com" and created_mail["Message-ID"]
    webhook = next(p for p in hook.posts if p["title"] == subjects[0])
    assert webhook["path"] == f"/hook/{TOKEN}" and f"Instance: {box}" in webhook["message"]


def test_every_event_a_request_causes_carries_its_x_request_id_and_so_does_its_notification(api, server,
                                                                                          emulator):
    created = api.post("/instances", json=NO_SSH | {"name": "traced"}, headers={"X-Request-Id": "abc"})
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == "abc"
    box = created.json()["id"]
    stopped = api.post(f"/instances/{box}/stop", headers={"X-Request-Id": "stop-req-1"})
    assert stopped.status_code == 202, stopped.text
    api.post("/instances/sync", headers={"X-Request-Id": "sweep-1"})  # a sweep asked for through the API
    events = api.get(f"/instances/{box}/events").json()["events"]
    by_action = {e["action"]: e for e in events}
    assert by_action["create"]["http_request_id"] == "abc"
    assert by_action["create"]["request_id"] not in (None, "abc")  # still the launch's RequestId
    assert by_action["stop"]["http_request_id"] == "stop-req-1"
    # No other request's id leaks into an event; the sweep the stop asks for runs in the background and may
    # record the stopped state before the sync does: no request caused that one (None).
    assert {e["http_request_id"] for e in events} <= {"abc", "stop-req-1", "sweep-1", None}
    # What a sync records carries the sync's id: once the sweeps the create and the stop asked for have run in the
    # background (no listing for two seconds: they start within one), a change made outside the API is one only
    # the next sync can record.
    wait_quiet(server)
    emulator.ec2.terminate_instances(InstanceIds=[box])
    api.post("/instances/sync", headers={"X-Request-Id": "sweep-2"}).raise_for_status()
    outside = [e for e in api.get(f"/instances/{box}/events").json()["events"] if e["to_state"] == "terminated"]
    assert [e["http_request_id"] for e in outside] == ["sweep-2"], outside
    with closing(sqlite3.connect(server.db_path)) as conn:  # the outbox row written with the event
        rows = conn.execute("SELECT n.data FROM notifications n JOIN instance_events e ON e.seq = n.event_seq "
                            "WHERE e.instance_id = ? AND e.action = 'create'", (box,)).fetchall()
    assert len(rows) == 1 and json.loads(rows[0][0])["http_request_id"] == "abc"


ADOPTED = "adopted (launched outside the API)"


def test_a_stop_outside_the_api_notifies_once(api, mail, emulator):
    # The instance is launched in the emulator and adopted (tests/support/seeding.py): what a stop outside the API
    # sends is the subject, not creating it (the first test): three `aws` processes fewer than a create.
    [box] = launch_managed(emulator, name="outside")
    adopt(api, [box])
    emulator.ec2.stop_instances(InstanceIds=[box])
    for _ in range(3):  # three sweeps see it stopped: one notification
        api.post("/instances/sync")
    wait_for(lambda: len([s for s in mails_for(mail, box) if "stopped outside" in s]), 1)
    settle()
    assert [s.rsplit(") ", 1)[1] for s in mails_for(mail, box)] == [ADOPTED, "stopped outside the API"]


def test_the_auto_stop_warning_arrives_before_the_stop(api, mail, emulator):
    [box] = launch_managed(emulator, name="warned")  # adopted, not created: as in the test above
    adopt(api, [box])
    stop_at = (datetime.now(UTC) + timedelta(seconds=12)).isoformat()
    assert api.patch(f"/instances/{box}", json={"stop_at": stop_at}).status_code == 200
    # AUTO_STOP_WARNING_MINUTES (15) is longer than what is left: the warning goes out at once.
    wait_for(lambda: len([s for s in mails_for(mail, box) if "stops soon" in s]), 1, timeout=8)
    assert not [s for s in mails_for(mail, box) if "auto-stop" in s and "stops soon" not in s]
    wait_for(lambda: len([s for s in mails_for(mail, box) if "stopped by its auto-stop" in s]), 1, timeout=60)
    subjects = [s.rsplit(") ", 1)[1] for s in mails_for(mail, box)]
    assert subjects == [ADOPTED, "stops soon (auto-stop)", "stopped by its auto-stop"], subjects
    warning = next(m for m in mail.messages if f"({box}) stops soon" in str(m["Subject"])).get_content()
    url = str(api.base_url).rstrip("/")  # NOTIFY_API_URL follows the server's port
    assert f"curl -X POST {url}/instances/{box}/snooze" in warning and '{"minutes": 60}' in warning
    assert '"auto_stop_minutes": 120' in warning  # and how to change the auto-stop for good


def email_deliveries(api: httpx.Client, instance_id: str) -> list[dict]:
    return [d for d in api.get("/notifications").json()["deliveries"]
            if d["instance_id"] == instance_id and d["channel"] == "email"]


def test_smtp_down_through_three_retries_every_mail_arrives_once(api, server, mail, hook, emulator):
    """The outage lasts until every mail has failed three times (the module's server caps the backoff at
    NOTIFY_RETRY_MAX_SECONDS=1), not a fixed minute: what it proves is the retries, then one delivery each."""
    mail.stop()
    try:
        # Launched in the emulator and adopted (its adoption is the first event), not created: the outage is the
        # subject. No syncs after: a delete is accepted from stopping (what the record may still say), and the
        # stop's and the delete's notifications come from the API's own events.
        [box] = launch_managed(emulator, name="while-down")
        adopt(api, [box])
        assert api.post(f"/instances/{box}/stop").status_code == 202
        assert api.delete(f"/instances/{box}").status_code == 202
        # The webhook channel does not wait for the mail channel.
        wait_for(lambda: len(hooks_for(hook, box)), 3)
        pending = email_deliveries(api, box)
        assert len(pending) == 3 and {d["status"] for d in pending} == {"pending"}

        def failed_three_times() -> list[dict]:
            rows = email_deliveries(api, box)
            return rows if all(d["attempts"] >= 3 for d in rows) else []

        failing = wait_until(failed_three_times, timeout=60, interval=0.5)
        assert len(failing) == 3 and {d["status"] for d in failing} == {"pending"}, failing
        assert all("SMTP 127.0.0.1" in d["last_error"] for d in failing), failing
        assert mails_for(mail, box) == []
    finally:
        mail.start()
    wait_for(lambda: len(mails_for(mail, box)), 3, timeout=30)
    settle()
    assert sorted(s.rsplit(") ", 1)[1] for s in mails_for(mail, box)) == [ADOPTED, "deleted", "stopped"]
    ids = [str(m["Message-ID"]) for m in mail.messages if f"({box})" in str(m["Subject"])]
    assert len(set(ids)) == 3 and all(i.startswith("<ec2cl.") and i.endswith("@ec2-creator-local>") for i in ids)
    delivered = [d for d in api.get("/notifications").json()["deliveries"] if d["instance_id"] == box]
    assert {(d["channel"].split(" ")[0], d["status"]) for d in delivered} == {("email", "sent"), ("url1", "sent")}
    assert len(delivered) == 6


def test_killed_right_after_an_event_it_delivers_after_restart(api, server, mail, emulator):
    """On the module's server (a restart, not a server of its own): the mail server is down from before the
    event until after the kill, so the event cannot be delivered before it."""
    # The event is an adoption (the instance launched in the emulator, a sync records it), not a create: any event's
    # outbox row is the subject; a create cost its group, its launch and the sweep after it.
    mail.stop()
    [box] = launch_managed(emulator, name="killed")
    try:
        api.post("/instances/sync").raise_for_status()
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        server.log.close()
    finally:
        mail.start()
    server.start()
    wait_for(lambda: len(mails_for(mail, box)), 1, timeout=30)
    settle()
    assert [s.rsplit(") ", 1)[1] for s in mails_for(mail, box)] == [ADOPTED]


def test_budget_crossings_notify_once_each(emulator, fresh_emulator, tmp_path):
    hook = WebhookReceiver().start()
    # Launched by hand with our tag: adopted (by the server's start-up sweep: no sync of its own, one `aws` process
    # fewer), and counted against the budget (no admission to refuse it).
    [box] = launch_managed(fresh_emulator, name=None)
    # The budget guard would stop the adopted box at once (tests/test_budget_guard.py): here it only notifies,
    # so spending keeps crossing the lines this test watches.
    server = ApiServer(tmp_path, emulator.url, BUDGET_USD="0.00002", NOTIFY_URLS=hook.url(),
                       NOTIFY_EVENTS="budget_80,budget_100,adopted", BUDGET_ENFORCEMENT="notify")
    try:
        with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as api:
            wait_for(lambda: len([t for t in hook.titles() if "budget" in t]), 2, timeout=45)
            settle()
            titles = hook.titles()
            assert [t for t in titles if "budget" in t] == [
                "[ec2-creator-local] 80 % of the month's budget spent",
                "[ec2-creator-local] 100 % of the month's budget spent"]
            assert len([t for t in titles if "adopted" in t]) == 1 and len(titles) == 3  # NOTIFY_EVENTS narrows
            # ...and it stops by itself, as the adoption's message says (DEFAULT_AUTO_STOP_MINUTES from now)
            stop_at = api.get(f"/instances/{box}").json()["stop_at"]
            adopted = next(p for p in hook.posts if "adopted" in p["title"])["message"]
            assert stop_at and f"Auto-stop at {stop_at} (480 min from its adoption" in adopted, adopted
            body = next(p for p in hook.posts if "100 %" in p["title"])["message"]
            assert "of BUDGET_USD 0.00" in body and f"GET {server.url}/budget" in body
    finally:
        server.stop()
        hook.stop()


def test_no_secret_reaches_the_log_or_the_api(emulator, fresh_emulator, tmp_path):
    mail = MailServer().start()  # no AUTH: every login fails, so every mail delivery fails with an error
    dead = free_port()
    launch_managed(fresh_emulator, name="secretive")  # the server's start-up sweep adopts it: two deliveries to fail
    server = ApiServer(tmp_path, emulator.url, SMTP_USERNAME="mailer", SMTP_PASSWORD="pw-s3cret-99",
                       NOTIFY_URLS=f"json://user:pass-s3cret-98@127.0.0.1:{dead}/hook/tok-s3cret-97",
                       **mail.settings())
    try:
        with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as api:
            def failed_twice() -> list[dict]:
                rows = api.get("/notifications").json()["deliveries"]
                return rows if len(rows) == 2 and all(r["attempts"] and r["last_error"] for r in rows) else []

            rows = wait_until(failed_twice, timeout=30)
            answer = api.get("/notifications").text
        assert {r["channel"] for r in rows} == {"email", "url1 (json)"}
        assert "SMTP 127.0.0.1" in answer and "url1 (json)" in answer
        for secret in ("pw-s3cret-99", "pass-s3cret-98", "tok-s3cret-97"):
            assert secret not in answer
            assert secret not in server.server_log()
    finally:
        server.stop()
        mail.stop()


def test_when_off_events_queue_nothing(emulator, fresh_emulator, tmp_path):
    # No channel: notifications are off (no notify_enabled), so turning notifications on later sends no old news.
    # Launched before its server starts: the start-up sweep adopts it (no sync of its own, one `aws` process fewer).
    [box] = launch_managed(fresh_emulator, name="quiet")
    server = ApiServer(tmp_path, emulator.url)
    try:
        with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as api:
            # Its adoption is an event: waited for, not synced (a sync joining the start-up sweep costs one more).
            wait_until(lambda: api.get(f"/instances/{box}").status_code == 200, timeout=30)
            assert api.get("/notifications").json() == {"enabled": False, "channels": [], "deliveries": []}
        with closing(sqlite3.connect(server.db_path)) as conn:
            assert conn.execute("SELECT count(*) FROM instance_events").fetchone()[0] >= 1
            assert conn.execute("SELECT count(*) FROM notifications").fetchone()[0] == 0
    finally:
        server.stop()
