"""Schema 6, one token per person: each instance and launch keeps its owner, each event who asked for it.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa

from app.store.migrations.helpers import TEXT, add_columns, create_index, set_version

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_columns("instances", sa.Column("owner", TEXT))
    add_columns("launches", sa.Column("owner", TEXT))
    add_columns("instance_events", sa.Column("actor", TEXT))
    create_index("instances_owner", "instances", ["owner"])
    set_version(6)
