"""Notifications: email (SMTP) and Apprise URLs (Slack, Teams, Discord, ntfy, JSON webhooks...) on every
change that costs or saves money. Never lost, never in the way.

- **Never lost.** A notification is a row of the `notifications` outbox. For an instance event, a SQLite
  trigger writes it in the same statement as the event (db.py), so no crash can separate the two; the
  auto-stop warning and the budget crossings are keyed rows (`INSERT OR IGNORE`), written once each.
- **Delivered at least once, never twice on purpose.** The sender (a lifespan task) expands each new
  notification into one delivery per channel (UNIQUE per notification and channel), claims due
  deliveries with a lease (so replicas sharing the database do not both send), sends, and marks them
  sent. A failure retries with doubling backoff up to NOTIFY_RETRY_MAX_SECONDS, for GIVE_UP_HOURS.
  Mail carries a Message-ID made of the delivery, so a resend after a crash mid-send is one message.
- **Never in the way.** No request waits for a notification: API calls only write events. Sending runs
  in a worker thread, bounded by SEND_TIMEOUT_SECONDS; a channel that fails is skipped for the rest of
  the round, so one that is down for hours delays nobody else.
- **No secrets out.** The SMTP password and the URLs (which carry tokens) are never logged nor
  answered: a channel is named `email` or `url<N> (<scheme>)`, and error texts are redacted.
"""

import asyncio
import json
import logging
import re
import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from app.budget.spending import Spending
from app.config import Settings
from app.core import clock
from app.core.backoff import backoff
from app.core.clock import TIME_FORMAT, parse_time
from app.core.loops import LoopTask
from app.store import Database
from app.store.rows import InstanceState

log = logging.getLogger("ec2_creator.notifications")

EVENTS = ("create", "start", "stop", "delete", "auto_stop", "auto_stop_warning", "stopped_outside",
          "started_outside", "terminated_outside", "adopted", "came_back", "budget_80", "budget_100",
          "budget_enforced", "schedule_start", "schedule_stop", "schedule_start_refused", "snoozed")
POLL_SECONDS = 1.0  # how often the sender looks for new notifications and due deliveries (one indexed query)
BUDGET_CHECK_SECONDS = 10.0
FIRST_RETRY_SECONDS = 5.0
GIVE_UP_HOURS = 72.0
LEASE_SECONDS = 120.0
SEND_TIMEOUT_SECONDS = 15.0
BATCH = 50  # notifications expanded per round
CLAIM = 10  # deliveries claimed per round: sent one after another, well inside the lease

_RUNNING = {InstanceState.PENDING, InstanceState.RUNNING}
_STOPPED = {InstanceState.STOPPING, InstanceState.STOPPED}
_ENDED = {InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED}


def event_name(action: str, source: str, from_state: str | None, to_state: str | None) -> str | None:
    """The notification an instance event makes, or None (a change the API's own call explains)."""
    if source == "api":
        if to_state in _ENDED and action in ("start", "stop"):
            return "terminated_outside"  # the API's start/stop found it gone: someone terminated it
        return {"create": "create", "start": "start", "stop": "stop", "delete": "delete"}.get(action)
    if source == "auto_stop":
        return "auto_stop"
    if source == "schedule":
        return action if action in ("schedule_start", "schedule_stop", "schedule_start_refused", "snoozed") else None
    if source == "budget_enforced":
        return "budget_enforced"
    if action == "adopt":
        return "adopted"
    if action == "reappeared":
        return "came_back"
    if action == "gone":
        return "terminated_outside"
    if action != "observe" or from_state is None:
        return None
    # The first observation of a change no API call made: from a steady state into another one's path.
    if to_state in _ENDED and from_state not in _ENDED:
        return "terminated_outside"
    if to_state in _STOPPED and from_state in _RUNNING:
        return "stopped_outside"
    if to_state in _RUNNING and from_state in _STOPPED:
        return "started_outside"
    return None


# -- secrets ------------------------------------------------------------------------------------------
# Schemes whose host is a place (a web server, a mail server): every other scheme may carry a token there
# (Telegram's bot token, Slack's first token...), so their host is treated as secret too.
HOST_IS_A_PLACE = {"json", "jsons", "xml", "xmls", "form", "forms", "http", "https", "ntfy", "ntfys", "mailto",
                   "mailtos", "gotify", "gotifys", "apprise", "apprises", "mmost", "mmosts", "rocket", "rockets"}


def url_secrets(url: str) -> list[str]:
    """The parts of an Apprise URL that may be secret: userinfo, path, query values, and the host unless
    the scheme names a place there. Percent-decoded forms too."""
    parts = urlsplit(url)
    found = [parts.password or "", parts.username or ""]
    hostport = parts.netloc.rsplit("@", 1)[-1]
    if scheme_of(url) not in HOST_IS_A_PLACE:
        found += [hostport, *hostport.split(":")]
    found += [p for p in parts.path.split("/") if p]
    found += [v for _, v in parse_qsl(parts.query) if v]
    found += [unquote(f) for f in found]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "****")
    return text


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "?"


def check_url(number: int, url: str) -> None:
    """A NOTIFY_URLS entry Apprise cannot send to is a ValueError that names it by number and scheme only."""
    import apprise  # ~0.1-1 s: only when NOTIFY_URLS is set

    logger = logging.getLogger("apprise")
    logger.disabled = True  # while it parses: it logs a URL it cannot parse word for word
    try:
        parsed = apprise.Apprise.instantiate(url)
    finally:
        logger.disabled = False
    if parsed is None:
        raise ValueError(f"entry {number} ({scheme_of(url)}://...) is not a URL Apprise can send to "
                         "(see https://github.com/caronc/apprise/wiki)")


# -- channels -----------------------------------------------------------------------------------------
@dataclass
class Message:
    key: str
    subject: str
    body: str
    data: dict[str, Any]


class DeliveryError(Exception):
    """A send that failed; its text is safe to store and show (redacted)."""


class EmailChannel:
    name = "email"

    def __init__(self, settings: Settings) -> None:
        self.host, self.port = str(settings.smtp_host), settings.smtp_port
        self.starttls = settings.smtp_starttls
        self.username = settings.smtp_username
        self.password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        self.sender = str(settings.smtp_from)
        self.to = list(settings.notify_email_to)
        self.secrets = [self.password] if self.password else []

    def connect(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(self.host, self.port, timeout=SEND_TIMEOUT_SECONDS)
        try:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self.username and self.password:
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: Message, delivery_id: int) -> None:
        mail = EmailMessage()
        mail["Subject"] = message.subject
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.to)
        mail["Date"] = format_datetime(clock.now())
        # One id per delivery: a resend (after a crash mid-send) is the same message to a mail client.
        mail["Message-ID"] = f"<ec2cl.{delivery_id}.{re.sub(r'[^A-Za-z0-9.-]', '.', message.key)}@ec2-creator-local>"
        mail["X-EC2-Creator-Local-Notification"] = message.key
        mail.set_content(message.body)
        try:
            with self.connect() as smtp:
                smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(redact(f"SMTP {self.host}:{self.port}: {exc.__class__.__name__}: {exc}",
                                       self.secrets)) from None


class AppriseChannel:
    def __init__(self, number: int, url: str) -> None:
        self.name = f"url{number} ({scheme_of(url)})"
        self.url = url
        self.secrets = url_secrets(url)
        self._apprise: Any = None

    def send(self, message: Message, delivery_id: int) -> None:
        import apprise

        said: list[str] = []
        handler = _Collect(said)
        quiet_apprise()  # (again: nothing may have turned its propagation back on)
        logger = logging.getLogger("apprise")
        logger.addHandler(handler)
        try:
            if self._apprise is None:
                self._apprise = apprise.Apprise()
                self._apprise.add(self.url)
            ok = self._apprise.notify(title=message.subject, body=message.body,
                                      body_format=apprise.NotifyFormat.TEXT)
        finally:
            logger.removeHandler(handler)
        if not ok:
            detail = "; ".join(said[-2:]) or "the service did not accept it"
            raise DeliveryError(redact(f"{self.name}: {detail}", self.secrets))


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage()[:300])


def quiet_apprise() -> None:
    """Apprise logs through its own logger: keep it out of the server's log and off stderr (its texts may
    carry URLs); a failure reaches the delivery's last_error, redacted, instead."""
    logger = logging.getLogger("apprise")
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


# -- messages -----------------------------------------------------------------------------------------
SUBJECTS = {
    "create": "created", "start": "started", "stop": "stopped", "delete": "deleted",
    "auto_stop": "stopped by its auto-stop", "auto_stop_warning": "stops soon (auto-stop)",
    "stopped_outside": "stopped outside the API", "started_outside": "started outside the API",
    "terminated_outside": "terminated outside the API", "adopted": "adopted (launched outside the API)",
    "came_back": "is back (it had been recorded gone)",
    "budget_enforced": "stopped: this month's committed spend passed BUDGET_USD",
    "schedule_start": "started by its schedule", "schedule_stop": "stopped by its schedule",
    "schedule_start_refused": "NOT started by its schedule", "snoozed": "snoozed (its next stop moved)",
}


def compose(event: str, note: dict, row: dict | None, cost: float | None, settings: Settings) -> Message:
    """Subject and body of one notification, from the outbox row, the instance now and its cost so far."""
    data = json.loads(note.get("data") or "{}")
    if event in ("budget_80", "budget_100"):
        share = event.split("_")[1]
        subject = f"[ec2-creator-local] {share} % of the month's budget spent"
        body = (f"Spent USD {data['spent_usd']:.4f} of BUDGET_USD {data['budget_usd']:.2f} this month "
                f"({data['period']}); committed to the month's end: USD {data['committed_usd']:.4f}.\n"
                f"Each instance's share: GET {settings.notify_api_url}/budget\n"
                f"Stop or delete what you do not use; creates are refused once committed spend would pass "
                f"the budget.\n\nTime: {note['at']}\nNotification: {note['key']}\n")
        return Message(note["key"], subject, body, data)
    row = row or {}
    instance_id = note.get("instance_id") or row.get("id") or "?"
    name = row.get("name") or instance_id
    state = data.get("to_state") or row.get("state") or "?"
    public_ip = data.get("public_ip") if "public_ip" in data else row.get("public_ip")
    ssh = row.get("ssh_string") if public_ip else None
    subject = f"[ec2-creator-local] {name} ({instance_id}) {SUBJECTS.get(event, event)}"
    lines = [
        f"Instance: {instance_id}", f"Name: {name}", f"State: {state}", f"Region: {row.get('region') or '?'}",
        f"Public IP: {public_ip or '-'}", f"SSH: {ssh or '-'}",
        f"Cost so far this month: USD {cost:.4f}" if cost is not None else "Cost so far this month: unknown",
        f"Time: {note['at']}", f"Event: {event}", f"Notification: {note['key']}",
    ]
    if event == "budget_enforced":
        if data.get("enforcement") == "notify":
            subject = (f"[ec2-creator-local] {name} ({instance_id}) would be stopped: this month's committed spend "
                       "passed BUDGET_USD")
        lines[:0] = [
            f"USD {data['committed_usd']:.4f} is committed this month ({data.get('period')}), more than BUDGET_USD "
            f"{data['budget_usd']:.2f}." if "committed_usd" in data else
            "This month's committed spend passed BUDGET_USD.",
            "BUDGET_ENFORCEMENT=notify left it running: stop it or another instance, or raise BUDGET_USD."
            if data.get("enforcement") == "notify" else
            "The budget guard stopped it (the newest runs first, until the rest fit). Start it again once there is "
            "room: GET /budget shows each instance's share.", ""]
    if data.get("detail"):
        lines[:0] = [str(data["detail"]), ""]
    if event == "auto_stop_warning":
        auth = ' -H "Authorization: Bearer $API_TOKEN"' if settings.auth_configured else ""
        what = "Scheduled stop" if data.get("source") == "schedule" else "Auto-stop"
        lines[:0] = [
            f"{what} at {data.get('stop_at')} (in about {data.get('minutes', '?')} min). To keep it running, "
            "snooze it: push the stop by 1 hour (15 to 720 minutes):",
            f"  curl -X POST {settings.notify_api_url}/instances/{instance_id}/snooze{auth} -H 'Content-Type: "
            "application/json' -d '{\"minutes\": 60}'",
            "(or {\"until\": \"<RFC 3339 time>\"}; to change its auto-stop for good: PATCH with "
            "{\"auto_stop_minutes\": 120}, or null for none)", ""]
    if event == "adopted" and row:
        lines[:0] = [*adopted_auto_stop(row, settings), ""]
        data = {**data, "stop_at": row.get("stop_at"), "auto_stop_minutes": row.get("auto_stop_minutes")}
    return Message(note["key"], subject, "\n".join(lines) + "\n", data)


def adopted_auto_stop(row: dict, settings: Settings) -> list[str]:
    """An adopted instance's auto-stop (DEFAULT_AUTO_STOP_MINUTES from its adoption, or none), and how to change it."""
    minutes, stop_at = row.get("auto_stop_minutes"), row.get("stop_at")
    if stop_at:
        said = f"Auto-stop at {stop_at}" + (f" ({minutes} min from its adoption: DEFAULT_AUTO_STOP_MINUTES)"
                                            if minutes else "") + "."
    elif minutes:
        said = f"Auto-stop: {minutes} min after each start (DEFAULT_AUTO_STOP_MINUTES); it is not running now."
    else:
        said = ("Auto-stop: none (DEFAULT_AUTO_STOP_MINUTES is never): it runs until someone stops it, and its "
                "cost counts in the budget.")
    auth = ' -H "Authorization: Bearer $API_TOKEN"' if settings.auth_configured else ""
    return [said, "To have it stop 2 hours after each start (from now if it runs):",
            f"  curl -X PATCH {settings.notify_api_url}/instances/{row.get('id')}{auth} -H 'Content-Type: "
            "application/json' -d '{\"auto_stop_minutes\": 120}'"]


# -- the sender ---------------------------------------------------------------------------------------
class Notifier(LoopTask):
    """Expands, warns, watches the budget and delivers; one round every POLL_SECONDS."""

    name = "notifications"

    def __init__(self, settings: Settings, db: Database, spending: Spending, region: str, endpoint: str,
                 channels: list | None = None) -> None:
        self.settings, self.db, self.spending = settings, db, spending
        self.region, self.endpoint = region, endpoint
        self.channels = channels if channels is not None else self.configured_channels(settings)
        self.wanted = set(settings.notify_events or EVENTS)
        self._budget_checked = float("-inf")
        self._queued: set[str] = set()  # keys this process queued already: no write to learn it again

    @staticmethod
    def configured_channels(settings: Settings) -> list:
        channels: list = [EmailChannel(settings)] if settings.notify_email_to else []
        channels += [AppriseChannel(n, u.get_secret_value()) for n, u in enumerate(settings.notify_urls, 1)]
        return channels

    @property
    def enabled(self) -> bool:
        return bool(self.channels)

    def start(self) -> None:
        if self.enabled:
            quiet_apprise()
            super().start()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.round)
            except Exception:  # noqa: BLE001 - the sender must outlive any one bad round
                log.exception("notification round failed")
            await asyncio.sleep(POLL_SECONDS)

    def round(self) -> None:
        """One pass: new notifications become deliveries, warnings and crossings are queued, due ones sent."""
        self.expand()
        self.queue_warnings()
        if time.monotonic() - self._budget_checked >= BUDGET_CHECK_SECONDS:
            self._budget_checked = time.monotonic()
            self.queue_budget_crossings()
        self.deliver_due()

    def expand(self) -> None:
        stale = (clock.now() - timedelta(hours=GIVE_UP_HOURS)).strftime(TIME_FORMAT)
        for note in self.db.unexpanded_notifications(BATCH):
            event = note["event"] or event_name(note["action"] or "", note["source"] or "", note["from_state"],
                                               note["to_state"])
            # Queued while no replica sent anything for longer than a delivery is retried: old news, dropped.
            fresh = note["at"] >= stale
            channels = [c.name for c in self.channels] if event in self.wanted and fresh else []
            self.db.expand_notification(note["id"], event, channels)

    def queue_warnings(self) -> None:
        minutes = self.settings.auto_stop_warning_minutes
        if not minutes or "auto_stop_warning" not in self.wanted:
            return
        horizon = (clock.now() + timedelta(minutes=minutes)).strftime(TIME_FORMAT)
        for row in self.db.stopping_before(horizon, None, self.endpoint):  # auto-stops of every region
            stop_at = parse_time(row["stop_at"])
            left = max(0, round(((stop_at or clock.now()) - clock.now()).total_seconds() / 60))
            self.queue(f"auto_stop_warning:{row['id']}:{row['stop_at']}", "auto_stop_warning", row["id"],
                       {"stop_at": row["stop_at"], "minutes": left, "to_state": row["state"],
                        "public_ip": row["public_ip"], "source": row["stop_source"] or "auto_stop"})

    def queue(self, key: str, event: str, instance_id: str | None, data: dict) -> None:
        """Queue a keyed notification once (the key is UNIQUE in the outbox; this set spares the write)."""
        if key in self._queued:
            return
        self.db.queue_notification(key, event, instance_id, data)
        if len(self._queued) > 10_000:
            self._queued.clear()
        self._queued.add(key)

    def queue_budget_crossings(self) -> None:
        summary = self.spending.summary()
        budget = self.spending.budget_usd
        period = summary.period_start.strftime("%Y-%m")
        for share in (80, 100):
            event = f"budget_{share}"
            if summary.spent_usd >= budget * share / 100 and event in self.wanted:
                self.queue(f"{event}:{period}:{self.endpoint or 'aws'}|{self.region}", event, None,
                           {"spent_usd": summary.spent_usd, "committed_usd": summary.committed_usd,
                            "budget_usd": budget, "period": period})

    def deliver_due(self) -> None:
        now = clock.now()
        lease = (now + timedelta(seconds=LEASE_SECONDS)).strftime(TIME_FORMAT)
        claimed = self.db.claim_deliveries(now.strftime(TIME_FORMAT), lease, CLAIM)
        by_name = {c.name: c for c in self.channels}
        failing: dict[str, str] = {}  # channel -> why: the rest of its deliveries wait for the next try
        deadline = time.monotonic() + LEASE_SECONDS - 4 * SEND_TIMEOUT_SECONDS
        for number, delivery in enumerate(claimed):
            if time.monotonic() > deadline:  # slow channels: hand the rest back before the lease runs out
                self.db.release_deliveries([d["id"] for d in claimed[number:]], lease)
                return
            channel = by_name.get(delivery["channel"])
            error = None
            if channel is None:
                error = "this channel is no longer configured"
            elif delivery["channel"] in failing:
                error = failing[delivery["channel"]]
            else:
                try:
                    channel.send(self.message(delivery), delivery["id"])
                except DeliveryError as exc:
                    error = failing[delivery["channel"]] = str(exc)
                except Exception as exc:  # noqa: BLE001 - an unexpected failure is a failed try, not a lost one
                    error = failing[delivery["channel"]] = redact(f"{exc.__class__.__name__}: {exc}",
                                                                  getattr(channel, "secrets", []))
            self.finish(delivery, error, lease)

    def message(self, delivery: dict) -> Message:
        row = self.db.get_instance(delivery["instance_id"]) if delivery["instance_id"] else None
        cost = None
        if row is not None:
            try:
                cost = self.spending.cost_of(row).spent_usd
            except Exception:  # noqa: BLE001 - a message without its cost beats no message
                cost = None
        return compose(delivery["event"], delivery, dict(row) if row else None, cost, self.settings)

    def finish(self, delivery: dict, error: str | None, lease: str) -> None:
        if error is None:
            self.db.finish_delivery(delivery["id"], "sent", None, None, lease)
            log.info("notification %s (%s) sent to %s", delivery["key"], delivery["event"], delivery["channel"])
            return
        attempts = delivery["attempts"] + 1
        first = parse_time(delivery["created_at"]) or clock.now()
        if clock.now() - first > timedelta(hours=GIVE_UP_HOURS):
            self.db.finish_delivery(delivery["id"], "failed", error, None, lease)
            log.error("notification %s to %s given up after %d attempts: %s", delivery["key"], delivery["channel"],
                      attempts, error)
            return
        wait = backoff(attempts, FIRST_RETRY_SECONDS, self.settings.notify_retry_max_seconds)
        retry = clock.now() + timedelta(seconds=wait)
        self.db.finish_delivery(delivery["id"], "pending", error, retry.strftime(TIME_FORMAT), lease)
        log.warning("notification %s to %s failed (attempt %d, next at %s): %s", delivery["key"],
                    delivery["channel"], attempts, retry.strftime(TIME_FORMAT), error)


def check_smtp(settings: Settings) -> str:
    """Connect, EHLO, STARTTLS and log in as the sender would; send nothing. Raises DeliveryError."""
    channel = EmailChannel(settings)
    try:
        channel.connect().quit()
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(redact(f"SMTP {channel.host}:{channel.port}: {exc.__class__.__name__}: {exc}",
                                   channel.secrets)) from None
    return (f"{channel.host}:{channel.port} connects" + (", STARTTLS" if channel.starttls else "")
            + (", login accepted" if channel.username else ""))


def settings_problems(settings: Settings) -> list[tuple[tuple[str, ...], str]]:
    """NOTIFY_EVENTS names events this code raises; every NOTIFY_URLS entry is one Apprise can send to (named by
    number and scheme only: a URL carries tokens). Run at start."""
    problems: list[tuple[tuple[str, ...], str]] = []
    bad = [e for e in settings.notify_events if e not in EVENTS]
    if bad:
        problems.append((("NOTIFY_EVENTS",), f"unknown event names {bad}; known: {', '.join(EVENTS)}"))
    for number, url in enumerate(settings.notify_urls, 1):
        try:
            check_url(number, url.get_secret_value())
        except ValueError as exc:
            problems.append((("NOTIFY_URLS",), str(exc)))
    return problems
