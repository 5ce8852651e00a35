"""Schema 8, SSH that works: who may reach port 22, why ssh_string is null, the instance's own security
group; the sentence once kept in ssh_string moves to ssh_unavailable (scripts run $(jq -r .ssh_string)).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from app.store.migrations.helpers import TEXT, add_columns, set_version

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_columns("instances", sa.Column("ssh_from", TEXT), sa.Column("ssh_unavailable", TEXT),
                sa.Column("ssh_group", TEXT))
    op.execute("UPDATE instances SET ssh_unavailable = ssh_string, ssh_string = NULL "
               "WHERE ssh_string IS NOT NULL AND ssh_string NOT LIKE 'ssh %'")
    set_version(8)
