"""Schema 4: the notifications outbox, one row per notification, one delivery per channel.

Before Alembic this version also made a trigger writing an instance event's notification; the code that
writes the event writes it now (app/store/events.py), and 0009 drops the trigger from the databases that
have it. This revision no longer makes it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa

from app.store.migrations.helpers import TEXT, create_index, create_table, id_column, set_version

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_table(
        "notifications",
        id_column("id"), sa.Column("key", TEXT, nullable=False, unique=True), sa.Column("event", TEXT),
        sa.Column("event_seq", sa.Integer), sa.Column("instance_id", TEXT), sa.Column("data", TEXT),
        sa.Column("at", TEXT, nullable=False), sa.Column("expanded", sa.Integer, nullable=False, server_default="0"),
        sqlite_autoincrement=True)
    create_index("notifications_new", "notifications", ["id"], where="expanded = 0")
    create_index("notifications_at", "notifications", ["at"])
    create_table(
        "deliveries",
        id_column("id"), sa.Column("notification_id", sa.Integer, nullable=False),
        sa.Column("channel", TEXT, nullable=False), sa.Column("status", TEXT, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"), sa.Column("next_at", TEXT),
        sa.Column("lease_until", TEXT), sa.Column("last_error", TEXT), sa.Column("created_at", TEXT, nullable=False),
        sa.Column("sent_at", TEXT), sa.UniqueConstraint("notification_id", "channel"),
        sqlite_autoincrement=True)
    create_index("deliveries_due", "deliveries", ["next_at"], where="status = 'pending'")
    set_version(4)
