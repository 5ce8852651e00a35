"""The schema's one home: every table, column and index of the store, as the migrations leave it (head).

Types say what both engines must agree on; SQLAlchemy renders them per engine:
- TEXT compares byte by byte on PostgreSQL too (COLLATE "C"): ids and timestamps sort exactly as on SQLite;
- an id column is SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT`, PostgreSQL's BIGINT identity;
- REAL is 8 bytes on both (PostgreSQL's DOUBLE PRECISION).
Booleans are stored as 0/1 INTEGERs, as the original project's SQLite database did.

tests/store/test_migrations.py checks that the migrations make exactly these tables, columns and indexes.
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
REAL: sa.types.TypeEngine = sa.REAL().with_variant(postgresql.DOUBLE_PRECISION(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()


def _id(name: str) -> sa.Column:
    return sa.Column(name, ID, sa.Identity(), primary_key=True)


instances = sa.Table(
    "instances", metadata,
    # The original project's columns first.
    sa.Column("id", TEXT, primary_key=True),
    sa.Column("name", TEXT), sa.Column("public_ip", TEXT), sa.Column("ami", TEXT),
    sa.Column("instance_type", TEXT), sa.Column("state", TEXT), sa.Column("ssh_string", TEXT),
    sa.Column("security_group_id", TEXT), sa.Column("backend_used", TEXT),
    sa.Column("created_at", TEXT), sa.Column("updated_at", TEXT),
    # 0001
    sa.Column("storage_gb", sa.Integer), sa.Column("tags", TEXT, nullable=False, server_default="{}"),
    sa.Column("login_user", TEXT), sa.Column("request_id", TEXT), sa.Column("launched_at", TEXT),
    # 0002: which EC2 it lives in (a sweep judges only its own), and how long it has been missing.
    sa.Column("region", TEXT), sa.Column("endpoint", TEXT), sa.Column("account", TEXT),
    sa.Column("missing_since", TEXT), sa.Column("missed_sweeps", sa.Integer, nullable=False, server_default="0"),
    # 0003, the spend guard: auto-stop, whether launched with a public IPv4 (NULL: unknown), and the row's
    # revision, bumped by every write in commit order (what the spend ledger and the list cache follow).
    sa.Column("auto_stop_minutes", sa.Integer), sa.Column("stop_at", TEXT),
    sa.Column("associate_public_ip", sa.Integer),
    sa.Column("rev", sa.Integer, nullable=False, server_default="0"),
    # 0005, idle stop by CloudWatch.
    sa.Column("stop_when_idle", TEXT), sa.Column("idle_alarm", TEXT), sa.Column("alarm_held", TEXT),
    sa.Column("alarm_attempts", sa.Integer, nullable=False, server_default="0"), sa.Column("alarm_retry_at", TEXT),
    # 0006, one token per person.
    sa.Column("owner", TEXT),
    # 0008, SSH that works.
    sa.Column("ssh_from", TEXT), sa.Column("ssh_unavailable", TEXT), sa.Column("ssh_group", TEXT),
    # 0010, schedules: the one attached (the EC2 tag Schedule), why it cannot be used, a snooze of the next stop,
    # what the next stop is for, the schedule's next start, since when it is attached, and whether
    # auto_stop_minutes is the server's default (1) or was asked for (0; NULL: not known, counted as asked for).
    sa.Column("schedule", TEXT), sa.Column("schedule_error", TEXT), sa.Column("snoozed_until", TEXT),
    sa.Column("stop_source", TEXT), sa.Column("next_start_at", TEXT), sa.Column("schedule_since", TEXT),
    sa.Column("auto_stop_default", sa.Integer),
    sa.Index("instances_state", "state"),
    sa.Index("instances_stop_at", "stop_at", sqlite_where=sa.text("stop_at IS NOT NULL"),
             postgresql_where=sa.text("stop_at IS NOT NULL")),
    sa.Index("instances_rev", "rev"),
    sa.Index("instances_owner", "owner"),
)

instance_events = sa.Table(
    "instance_events", metadata,
    _id("seq"),
    sa.Column("instance_id", TEXT, nullable=False), sa.Column("at", TEXT, nullable=False),
    sa.Column("action", TEXT, nullable=False), sa.Column("from_state", TEXT), sa.Column("to_state", TEXT),
    sa.Column("source", TEXT, nullable=False), sa.Column("request_id", TEXT), sa.Column("aws_error", TEXT),
    sa.Column("public_ip", TEXT),  # 0003
    sa.Column("actor", TEXT),  # 0006
    sa.Column("http_request_id", TEXT),  # 0009: the X-Request-Id of the HTTP request that caused it
    sa.Column("detail", TEXT),  # 0010: why (a refused scheduled start, a snooze)
    sa.Index("events_instance", "instance_id", "seq"),
    sa.Index("events_at", "at"),
    sqlite_autoincrement=True,
)

ami_catalog = sa.Table(
    "ami_catalog", metadata,
    sa.Column("scope", TEXT, primary_key=True), sa.Column("ami_id", TEXT, primary_key=True),
    sa.Column("architecture", TEXT, nullable=False), sa.Column("root_device_name", TEXT, nullable=False),
    sa.Column("login_user", TEXT, nullable=False), sa.Column("alias", TEXT), sa.Column("image_name", TEXT),
    sa.Column("resolved_at", TEXT, nullable=False),
)

instance_types = sa.Table(
    "instance_types", metadata,
    sa.Column("scope", TEXT, primary_key=True), sa.Column("name", TEXT, primary_key=True),
    sa.Column("architecture", TEXT, nullable=False), sa.Column("fetched_at", TEXT, nullable=False),
)

kv = sa.Table("kv", metadata, sa.Column("key", TEXT, primary_key=True), sa.Column("value", TEXT, nullable=False))

# One row per create request, written BEFORE the aws process starts (crash recovery, Idempotency-Key replay).
launches = sa.Table(
    "launches", metadata,
    sa.Column("request_id", TEXT, primary_key=True), sa.Column("idempotency_key", TEXT, unique=True),
    sa.Column("body_hash", TEXT, nullable=False), sa.Column("body", TEXT, nullable=False),
    sa.Column("status", TEXT, nullable=False), sa.Column("instance_id", TEXT), sa.Column("error", TEXT),
    sa.Column("created_at", TEXT, nullable=False), sa.Column("updated_at", TEXT, nullable=False),
    sa.Column("region", TEXT), sa.Column("endpoint", TEXT),  # 0002
    sa.Column("owner", TEXT),  # 0006
    sa.Index("launches_status", "status"),
)

# The outbox (0004): one row per notification, one delivery per channel.
notifications = sa.Table(
    "notifications", metadata,
    _id("id"),
    sa.Column("key", TEXT, nullable=False, unique=True), sa.Column("event", TEXT), sa.Column("event_seq", sa.Integer),
    sa.Column("instance_id", TEXT), sa.Column("data", TEXT), sa.Column("at", TEXT, nullable=False),
    sa.Column("expanded", sa.Integer, nullable=False, server_default="0"),
    sa.Index("notifications_new", "id", sqlite_where=sa.text("expanded = 0"), postgresql_where=sa.text("expanded = 0")),
    sa.Index("notifications_at", "at"),
    sqlite_autoincrement=True,
)

deliveries = sa.Table(
    "deliveries", metadata,
    _id("id"),
    sa.Column("notification_id", sa.Integer, nullable=False), sa.Column("channel", TEXT, nullable=False),
    sa.Column("status", TEXT, nullable=False), sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_at", TEXT), sa.Column("lease_until", TEXT), sa.Column("last_error", TEXT),
    sa.Column("created_at", TEXT, nullable=False), sa.Column("sent_at", TEXT),
    sa.UniqueConstraint("notification_id", "channel"),
    sa.Index("deliveries_due", "next_at", sqlite_where=sa.text("status = 'pending'"),
             postgresql_where=sa.text("status = 'pending'")),
    sqlite_autoincrement=True,
)

# The spend guard's reservations (0007): one row per admitted create or start (and budget period) whose
# record is not written yet, seen by every replica.
reservations = sa.Table(
    "reservations", metadata,
    sa.Column("key", TEXT, primary_key=True), sa.Column("usd", REAL, nullable=False),
    sa.Column("until", TEXT, nullable=False),
)

# Schedules (0010): office hours by name; periods and holidays as JSON (app/schedules/calendar.py reads them).
schedules = sa.Table(
    "schedules", metadata,
    sa.Column("name", TEXT, primary_key=True), sa.Column("timezone", TEXT, nullable=False),
    sa.Column("periods", TEXT, nullable=False), sa.Column("holidays", TEXT, nullable=False),
    sa.Column("respect_manual_stop", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", TEXT, nullable=False), sa.Column("updated_at", TEXT, nullable=False),
)

# Columns holding JSON (decoded when read), with the value an empty or unreadable one reads as.
JSON_FIELDS: dict[str, dict | None] = {"tags": {}, "stop_when_idle": None, "idle_alarm": None}
INSTANCE_FIELDS: tuple[str, ...] = tuple(c.name for c in instances.columns)
EVENT_FIELDS: tuple[str, ...] = ("at", "action", "from_state", "to_state", "source", "request_id", "aws_error",
                                 "public_ip", "actor", "http_request_id", "detail")
