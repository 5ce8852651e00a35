"""What the revisions share. Each revision is frozen: it says what its schema version added, with these
types (not app/store/tables.py's, which follow the head).

The revisions are idempotent (a table, column or index that exists is left alone): a database made by the
code before Alembic is stamped at its version, and the original project's database (version 0) already has
an `instances` table. Offline (`upgrade --sql`) nothing can be looked at: the SQL assumes the database is
exactly at the revision the range starts from.

Each revision also keeps the schema version of the code before Alembic in step (SQLite's `PRAGMA
user_version`, a `schema_version` table on PostgreSQL), so a replica of an older version refuses the
database instead of migrating it its own way.
"""

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
REAL: sa.types.TypeEngine = sa.REAL().with_variant(postgresql.DOUBLE_PRECISION(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def id_column(name: str) -> sa.Column:
    return sa.Column(name, ID, sa.Identity(), primary_key=True)


def offline() -> bool:
    return context.is_offline_mode()


def postgres() -> bool:
    return op.get_context().dialect.name == "postgresql"


def has_table(table: str) -> bool:
    return False if offline() else sa.inspect(op.get_bind()).has_table(table)


def columns(table: str) -> set[str]:
    if offline() or not has_table(table):
        return set()
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def add_columns(table: str, *new: sa.Column) -> None:
    """Each column `table` lacks (SQLite adds a column in place: no table copy)."""
    have = columns(table)
    for column in new:
        if column.name not in have:
            op.add_column(table, column)


def create_table(table: str, *items, **kwargs) -> None:
    if not has_table(table):
        op.create_table(table, *items, **kwargs)


def create_index(name: str, table: str, cols: list[str], where: str | None = None) -> None:
    kwargs: dict[str, Any] = {} if where is None else {"sqlite_where": sa.text(where),
                                                       "postgresql_where": sa.text(where)}
    op.create_index(name, table, cols, if_not_exists=True, **kwargs)


def set_version(version: int) -> None:
    """The schema version an older service reads."""
    if postgres():
        op.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        op.execute("DELETE FROM schema_version")
        op.execute(f"INSERT INTO schema_version (version) VALUES ({int(version)})")
    else:
        op.execute(f"PRAGMA user_version = {int(version)}")
