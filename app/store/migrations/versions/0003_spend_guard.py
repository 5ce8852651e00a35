"""Schema 3, the spend guard: auto-stop, the public IPv4 asked for, the row's revision; each event keeps the
public IP recorded with it (the ledger counts IPv4 hours from them).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa

from app.store.migrations.helpers import TEXT, add_columns, create_index, set_version

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_columns("instances", sa.Column("auto_stop_minutes", sa.Integer), sa.Column("stop_at", TEXT),
                sa.Column("associate_public_ip", sa.Integer),
                sa.Column("rev", sa.Integer, nullable=False, server_default="0"))
    add_columns("instance_events", sa.Column("public_ip", TEXT))
    create_index("instances_stop_at", "instances", ["stop_at"], where="stop_at IS NOT NULL")
    create_index("instances_rev", "instances", ["rev"])
    set_version(3)
