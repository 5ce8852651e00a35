"""Schema 1: instances (the original project's table, kept), their events, the catalogue caches, kv and
one launch row per create request, written before its aws process starts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from app.store.migrations.helpers import TEXT, add_columns, create_index, create_table, id_column, set_version

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_table(
        "instances",
        sa.Column("id", TEXT, primary_key=True), sa.Column("name", TEXT), sa.Column("public_ip", TEXT),
        sa.Column("ami", TEXT), sa.Column("instance_type", TEXT), sa.Column("state", TEXT),
        sa.Column("ssh_string", TEXT), sa.Column("security_group_id", TEXT), sa.Column("backend_used", TEXT),
        sa.Column("created_at", TEXT), sa.Column("updated_at", TEXT))
    add_columns("instances", sa.Column("storage_gb", sa.Integer),
                sa.Column("tags", TEXT, nullable=False, server_default="{}"), sa.Column("login_user", TEXT),
                sa.Column("request_id", TEXT), sa.Column("launched_at", TEXT))
    op.execute("UPDATE instances SET tags = '{}' WHERE tags IS NULL")
    create_index("instances_state", "instances", ["state"])
    create_table(
        "instance_events",
        id_column("seq"), sa.Column("instance_id", TEXT, nullable=False), sa.Column("at", TEXT, nullable=False),
        sa.Column("action", TEXT, nullable=False), sa.Column("from_state", TEXT), sa.Column("to_state", TEXT),
        sa.Column("source", TEXT, nullable=False), sa.Column("request_id", TEXT), sa.Column("aws_error", TEXT),
        sqlite_autoincrement=True)
    create_index("events_instance", "instance_events", ["instance_id", "seq"])
    create_table(
        "ami_catalog",
        sa.Column("ami_id", TEXT, primary_key=True), sa.Column("architecture", TEXT, nullable=False),
        sa.Column("root_device_name", TEXT, nullable=False), sa.Column("login_user", TEXT, nullable=False),
        sa.Column("alias", TEXT), sa.Column("image_name", TEXT), sa.Column("resolved_at", TEXT, nullable=False))
    create_table(
        "instance_types",
        sa.Column("name", TEXT, primary_key=True), sa.Column("architecture", TEXT, nullable=False),
        sa.Column("fetched_at", TEXT, nullable=False))
    create_table("kv", sa.Column("key", TEXT, primary_key=True), sa.Column("value", TEXT, nullable=False))
    create_table(
        "launches",
        sa.Column("request_id", TEXT, primary_key=True), sa.Column("idempotency_key", TEXT, unique=True),
        sa.Column("body_hash", TEXT, nullable=False), sa.Column("body", TEXT, nullable=False),
        sa.Column("status", TEXT, nullable=False), sa.Column("instance_id", TEXT), sa.Column("error", TEXT),
        sa.Column("created_at", TEXT, nullable=False), sa.Column("updated_at", TEXT, nullable=False))
    create_index("launches_status", "launches", ["status"])
    set_version(1)
