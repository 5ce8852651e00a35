"""Bringing a database to the head revision at start (and `make db-upgrade`).

Under the write lock (SQLite BEGIN IMMEDIATE; PostgreSQL the write lock), in one transaction, so replicas
starting at once migrate once (the others then find the head):
- no `alembic_version` but a schema version N of the code before Alembic (SQLite's `PRAGMA user_version`,
  a `schema_version` table on PostgreSQL): stamped at revision 000N, then upgraded;
- the original project's database (version 0, an `instances` table only) and an empty one: upgraded from
  the start (the revisions keep what exists);
- a revision (or a version) newer than this code knows: refused, nothing changed.
"""

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


class SchemaTooNew(RuntimeError):
    """The database was written by a newer version of the service."""


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["connection"] = connection
    return config


SCRIPTS = ScriptDirectory.from_config(alembic_config())
HEAD = SCRIPTS.get_current_head() or "0000"
SCHEMA_VERSION = int(HEAD)
KNOWN = {script.revision for script in SCRIPTS.walk_revisions()}


def legacy_version(conn: Connection) -> int:
    """The schema version the code before Alembic kept (0: none)."""
    if conn.dialect.name == "postgresql":
        if not sa.inspect(conn).has_table("schema_version"):
            return 0
        return int(conn.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar() or 0)
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _too_new(name: str, version: int | str) -> SchemaTooNew:
    return SchemaTooNew(
        f"the database {name} has schema version {version}, newer than this version of "
        f"ec2-creator-local understands ({SCHEMA_VERSION}); upgrade the service, or point "
        "DATABASE_URL at another file. Nothing was changed.")


def upgrade(conn: Connection, name: str) -> None:
    """Bring the database of `conn` (in a write transaction) to the head revision."""
    revision = current_revision(conn)
    config = alembic_config(conn)
    if revision is None:
        version = legacy_version(conn)
        if version > SCHEMA_VERSION:
            raise _too_new(name, version)
        if version > 0:
            command.stamp(config, f"{version:04d}")
    elif revision not in KNOWN:
        raise _too_new(name, int(revision) if revision.isdigit() else revision)
    command.upgrade(config, "head")
