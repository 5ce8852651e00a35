"""Schema 9: the code that writes an instance event writes its notification, in the same transaction
(app/store/events.py): the trigger of schema 4 goes. Each event keeps the X-Request-Id of the HTTP request
that caused it (http_request_id; request_id keeps its meaning: the launch's RequestId).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from app.store.migrations.helpers import TEXT, add_columns, postgres, set_version

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The trigger is an object of one engine: each engine drops its own.
    if postgres():
        op.execute("DROP TRIGGER IF EXISTS notify_instance_event ON instance_events")
        op.execute("DROP FUNCTION IF EXISTS notify_instance_event()")
    else:
        op.execute("DROP TRIGGER IF EXISTS notify_instance_event")
    add_columns("instance_events", sa.Column("http_request_id", TEXT))
    set_version(9)
