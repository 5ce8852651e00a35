"""Schema 10, schedules (issue 27): office hours by name, attached to an instance (`schedule`, also the EC2 tag
Schedule=<name>), with the reason an attached name could not be used (`schedule_error`) and a snooze that
pushes the next stop (`snoozed_until`, UTC, expires by itself); what the next stop is for (`stop_source`: auto_stop or
schedule), when the schedule starts it next (`next_start_at`), when the attached schedule was set
(`schedule_since`), whether auto_stop_minutes was asked for or is the server's default (`auto_stop_default`); and
on events, a sentence on why (`detail`: a refused scheduled start, a snooze).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa

from app.store.migrations.helpers import TEXT, add_columns, create_table, set_version

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_table("schedules", sa.Column("name", TEXT, primary_key=True), sa.Column("timezone", TEXT, nullable=False),
                 sa.Column("periods", TEXT, nullable=False), sa.Column("holidays", TEXT, nullable=False),
                 sa.Column("respect_manual_stop", sa.Integer, nullable=False, server_default="1"),
                 sa.Column("created_at", TEXT, nullable=False), sa.Column("updated_at", TEXT, nullable=False))
    add_columns("instances", sa.Column("schedule", TEXT), sa.Column("schedule_error", TEXT),
                sa.Column("snoozed_until", TEXT), sa.Column("stop_source", TEXT), sa.Column("next_start_at", TEXT),
                sa.Column("schedule_since", TEXT), sa.Column("auto_stop_default", sa.Integer))
    add_columns("instance_events", sa.Column("detail", TEXT))
    set_version(10)
