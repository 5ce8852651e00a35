"""The pure parts of notifications: which event notifies, what a message says, redaction."""

import pytest

from app.config import Settings
from app.notifications.service import compose, event_name, redact, url_secrets


@pytest.mark.parametrize(("action", "source", "from_state", "to_state", "expected"), [
    ("create", "api", None, "pending", "create"),
    ("start", "api", "stopped", "pending", "start"),
    ("stop", "api", "running", "stopping", "stop"),
    ("delete", "api", "running", "shutting-down", "delete"),
    ("stop", "auto_stop", "running", "stopping", "auto_stop"),
    ("adopt", "adopt", None, "running", "adopted"),
    ("reappeared", "reconcile", "terminated", "running", "came_back"),
    ("gone", "reconcile", "running", "terminated", "terminated_outside"),
    # The API's start or stop found it gone (EC2: no such instance): someone terminated it.
    ("start", "api", "stopped", "terminated", "terminated_outside"),
    ("stop", "api", "running", "terminated", "terminated_outside"),
    # What a sweep sees after the API's own call: no second notification.
    ("observe", "reconcile", "pending", "running", None),
    ("observe", "reconcile", "stopping", "stopped", None),
    ("observe", "reconcile", "shutting-down", "terminated", None),
    # What nobody asked the API for.
    ("observe", "reconcile", "running", "stopped", "stopped_outside"),
    ("observe", "reconcile", "running", "stopping", "stopped_outside"),
    ("observe", "reconcile", "stopped", "running", "started_outside"),
    ("observe", "reconcile", "running", "terminated", "terminated_outside"),
    ("observe", "reconcile", "stopped", "shutting-down", "terminated_outside"),
    # Issue 27: what a schedule did, did not do, and a snooze.
    ("schedule_start", "schedule", "stopped", "pending", "schedule_start"),
    ("schedule_stop", "schedule", "running", "stopping", "schedule_stop"),
    ("schedule_start_refused", "schedule", None, None, "schedule_start_refused"),
    ("snoozed", "schedule", None, None, "snoozed"),
])
def test_which_events_notify(action, source, from_state, to_state, expected):
    assert event_name(action, source, from_state, to_state) == expected


def test_url_secrets_cover_userinfo_path_and_query_but_not_the_host():
    url = "json://bob:hunter22@hooks.example.com:8443/services/T000/B111/XXXXsecret?token=abcdef&x=1"
    secrets = url_secrets(url)
    text = redact(f"failed to reach {url} (hunter22, XXXXsecret, abcdef)", secrets)
    for secret in ("hunter22", "XXXXsecret", "abcdef", "T000", "B111"):
        assert secret not in text
    assert "hooks.example.com" in text


@pytest.mark.parametrize("url, secrets", [
    ("tgram://123456789:AAHxyzTOKEN/12315544", ["123456789", "AAHxyzTOKEN", "12315544"]),
    ("slack://T0AAAA/B0BBBB/XXXXsecret", ["T0AAAA", "B0BBBB", "XXXXsecret"]),
    ("json://127.0.0.1:8080/hook/tok%2Fen-1", ["tok%2Fen-1", "tok/en-1"]),
])
def test_token_schemes_hide_their_host_and_encoded_forms(url, secrets):
    text = redact(f"could not send to {url} ({' '.join(secrets)})", url_secrets(url))
    assert not [s for s in secrets if s in text], text


def test_a_url_apprise_cannot_parse_is_refused_without_being_printed(capsys, caplog):
    from app.notifications.service import check_url

    with pytest.raises(ValueError, match=r"entry 3 \(\?://\.\.\.\)"):
        check_url(3, "hooks.slack.com/services/T0AAAA/B0BBBB/secretwebhooktoken")
    said = capsys.readouterr()
    assert "secretwebhooktoken" not in said.out + said.err + caplog.text


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


def test_instance_message_has_what_the_issue_lists():
    note = {"key": "event:7", "at": "2026-11-28T05:00:00.000000Z", "instance_id": "i-0123456789abcdef0",
            "data": '{"to_state": "running", "public_ip": "203.0.113.9"}'}
    row = {"id": "i-0123456789abcdef0", "name": "web", "state": "stopped", "region": "eu-west-1",
           "public_ip": None, "ssh_string": "ssh -i k.pem ec2-user@203.0.113.9"}
    message = compose("start", note, row, 0.1234, settings())
    assert message.subject == "[ec2-creator-local] web (i-0123456789abcdef0) started"
    for line in ("Instance: i-0123456789abcdef0", "Name: web", "State: running", "Region: eu-west-1",
                 "Public IP: 203.0.113.9", "SSH: ssh -i k.pem ec2-user@203.0.113.9",
                 "Cost so far this month: USD 0.1234", "Time: 2026-11-28T05:00:00.000000Z"):
        assert line in message.body


def test_auto_stop_warning_says_how_to_snooze_with_the_token_header_when_one_is_set():
    note = {"key": "auto_stop_warning:i-1:x", "at": "t", "instance_id": "i-0123456789abcdef0",
            "data": '{"stop_at": "2026-11-28T05:15:00.000000Z", "minutes": 15}'}
    body = compose("auto_stop_warning", note, None, None, settings(api_token="a" * 20,
                                                                   notify_api_url="https://ec2.example.com")).body
    assert "Auto-stop at 2026-11-28T05:15:00.000000Z (in about 15 min)" in body
    assert ("curl -X POST https://ec2.example.com/instances/i-0123456789abcdef0/snooze -H \"Authorization: Bearer "
            "$API_TOKEN\"") in body and '{"minutes": 60}' in body
    assert "PATCH" in body and '{"auto_stop_minutes": 120}' in body  # to change it for good
    assert "a" * 20 not in body


def test_an_adoption_says_when_its_default_auto_stop_comes_or_that_it_has_none():
    note = {"key": "event:9", "at": "2026-11-28T05:00:00.000000Z", "instance_id": "i-0123456789abcdef0",
            "data": '{"to_state": "running", "public_ip": null}'}
    row = {"id": "i-0123456789abcdef0", "name": "hand", "state": "running", "auto_stop_minutes": 480,
           "stop_at": "2026-11-28T13:00:00.000000Z"}
    message = compose("adopted", note, row, 0.0, settings())
    assert message.subject == "[ec2-creator-local] hand (i-0123456789abcdef0) adopted (launched outside the API)"
    assert message.body.startswith("Auto-stop at 2026-11-28T13:00:00.000000Z (480 min from its adoption: "
                                   "DEFAULT_AUTO_STOP_MINUTES).\n")
    assert "curl -X PATCH http://127.0.0.1:8000/instances/i-0123456789abcdef0 -H 'Content-Type" in message.body
    assert message.data["stop_at"] == "2026-11-28T13:00:00.000000Z" and message.data["auto_stop_minutes"] == 480
    stopped = compose("adopted", note, {**row, "state": "stopped", "stop_at": None}, 0.0, settings()).body
    assert "Auto-stop: 480 min after each start (DEFAULT_AUTO_STOP_MINUTES); it is not running now." in stopped
    never = compose("adopted", note, {**row, "stop_at": None, "auto_stop_minutes": None}, 0.0, settings()).body
    assert "Auto-stop: none (DEFAULT_AUTO_STOP_MINUTES is never)" in never


def test_a_scheduled_stops_warning_says_so_and_a_refused_start_says_why():
    note = {"key": "auto_stop_warning:i-1:x", "at": "t", "instance_id": "i-0123456789abcdef0",
            "data": '{"stop_at": "2026-12-07T17:00:00.000000Z", "minutes": 15, "source": "schedule"}'}
    body = compose("auto_stop_warning", note, None, None, settings(notify_api_url="http://127.0.0.1:8000")).body
    assert body.startswith("Scheduled stop at 2026-12-07T17:00:00.000000Z (in about 15 min)")
    assert "curl -X POST http://127.0.0.1:8000/instances/i-0123456789abcdef0/snooze" in body
    refused = {"key": "event:7", "at": "t", "instance_id": "i-0123456789abcdef0",
               "data": '{"to_state": null, "detail": "budget_exceeded: Starting i-0123456789abcdef0 would pass"}'}
    message = compose("schedule_start_refused", refused, {"id": "i-0123456789abcdef0", "name": "web"}, None,
                      settings())
    assert message.subject == "[ec2-creator-local] web (i-0123456789abcdef0) NOT started by its schedule"
    assert message.body.startswith("budget_exceeded: Starting i-0123456789abcdef0 would pass\n")
