"""Schema 7: the spend guard's reservations, seen by every replica on one PostgreSQL database: one row per
admitted create or start whose record is not written yet, until it is (or `until` passes).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa

from app.store.migrations.helpers import REAL, TEXT, create_table, set_version

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_table("reservations", sa.Column("key", TEXT, primary_key=True), sa.Column("usd", REAL, nullable=False),
                 sa.Column("until", TEXT, nullable=False))
    set_version(7)
