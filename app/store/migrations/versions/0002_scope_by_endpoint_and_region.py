"""Schema 2: rows scoped by (endpoint, region); the catalogue caches become per scope; events pruned by time.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from app.store.migrations.helpers import TEXT, add_columns, create_index, has_table, offline, set_version

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_columns("instances", sa.Column("region", TEXT), sa.Column("endpoint", TEXT), sa.Column("account", TEXT),
                sa.Column("missing_since", TEXT), sa.Column("missed_sweeps", sa.Integer, nullable=False,
                                                            server_default="0"))
    add_columns("launches", sa.Column("region", TEXT), sa.Column("endpoint", TEXT))
    # Caches, refetched on demand: now keyed by scope (endpoint + region).
    for table in ("ami_catalog", "instance_types"):
        if offline() or has_table(table):
            op.drop_table(table)
    op.execute("DELETE FROM kv WHERE key = 'catalog_resolved_at'")
    op.create_table(
        "ami_catalog",
        sa.Column("scope", TEXT, primary_key=True), sa.Column("ami_id", TEXT, primary_key=True),
        sa.Column("architecture", TEXT, nullable=False), sa.Column("root_device_name", TEXT, nullable=False),
        sa.Column("login_user", TEXT, nullable=False), sa.Column("alias", TEXT), sa.Column("image_name", TEXT),
        sa.Column("resolved_at", TEXT, nullable=False))
    op.create_table(
        "instance_types",
        sa.Column("scope", TEXT, primary_key=True), sa.Column("name", TEXT, primary_key=True),
        sa.Column("architecture", TEXT, nullable=False), sa.Column("fetched_at", TEXT, nullable=False))
    create_index("events_at", "instance_events", ["at"])
    set_version(2)
