"""Schema 5, idle stop by CloudWatch: the setting asked for, the alarm's public view, what CloudWatch holds
(canonical JSON; NULL: no alarm) and when to try again after a failure.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa

from app.store.migrations.helpers import TEXT, add_columns, set_version

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_columns("instances", sa.Column("stop_when_idle", TEXT), sa.Column("idle_alarm", TEXT),
                sa.Column("alarm_held", TEXT), sa.Column("alarm_attempts", sa.Integer, nullable=False,
                                                         server_default="0"),
                sa.Column("alarm_retry_at", TEXT))
    set_version(5)
