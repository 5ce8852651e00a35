"""`make db-copy FROM=... TO=...` (`python -m app.store.copy FROM TO`): copy the whole store from one database to
another, e.g. a team's SQLite file to the PostgreSQL its replicas will share, so that nothing is lost: instances
with their owners, auto-stops and idle settings, launches, events, the spend history, the outbox, kv.

- FROM must exist. It is migrated to the head revision first (what this code's server does at its next start;
  it keeps every row), so a database of an older version copies too; one newer than this code is refused.
- TO is created (a SQLite file) or must already exist (a PostgreSQL database); it must be EMPTY: if any of the
  store's tables holds a row, the copy is refused, naming them, and nothing is written to TO at all (checked
  before FROM is migrated, so a refused copy changes neither; and again inside TO's transaction).
- In ONE write transaction on TO (under the store's write lock): the check that TO is empty, its migration to the
  head revision, every table of app/store/tables.py's MetaData in dependency order, in batches, and the id
  counters (all or nothing: a failure leaves TO as it was).
- FROM is read in one transaction too (one snapshot): a server still writing to it during the copy would lose
  what it writes after the snapshot. Stop the servers first.
- The ids the store generates (instance_events.seq, notifications.id, deliveries.id) continue after the highest
  FROM ever gave, not only after the highest still there: SQLite's AUTOINCREMENT never reuses an id, and an
  event's notification is keyed by its seq (`event:<seq>`), so a reused seq would lose a notification.

Not copied: `alembic_version` (TO's own, written by its migration: both end at the head revision), the old
schema version (SQLite's PRAGMA user_version, PostgreSQL's `schema_version` table: written by TO's migration too)
and SQLite's `sqlite_sequence` (carried over as the id counters above). There is no leadership table: leadership
and the per-instance locks are PostgreSQL advisory locks held by live sessions, nothing to copy.

Nothing printed names a password: PostgreSQL URLs are shown with it replaced by ***.
"""

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.config import Settings, _hide_password
from app.store.database import Database
from app.store.engine import STORE_ERRORS, is_postgres_url, sqlite_path, store_error_reason
from app.store.schema import HEAD, SchemaTooNew, current_revision, upgrade
from app.store.tables import metadata

BATCH = 1000
USAGE = ("usage: make db-copy FROM=<database> TO=<database>\n"
         "       (python -m app.store.copy FROM TO)\n"
         "  each a SQLite file path, sqlite:///path or postgresql://user:password@host:port/database,\n"
         "  as DATABASE_URL takes it; TO must be empty. Stop every server using FROM first.")


class CopyRefused(Exception):
    """The copy cannot be made (a missing source, a non-empty target...); nothing was written to TO."""


class CopyFailed(Exception):
    """A store error while copying a table (TO's transaction is rolled back)."""


@dataclass
class CopyReport:
    source: str
    target: str
    source_revision: str | None  # FROM's revision before this copy migrated it (None: before Alembic, or new)
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied, in copy order
    next_ids: dict[str, int] = field(default_factory=dict)  # "table.column" -> the highest id TO will continue after


def identity_columns(table: sa.Table) -> list[sa.Column]:
    """The columns whose values the store generates (instance_events.seq, notifications.id, deliveries.id)."""
    return [c for c in table.primary_key.columns if c.identity is not None]


def _check_url(url: str, which: str) -> str:
    try:
        return Settings._database_url(url)  # what DATABASE_URL accepts, with its own message
    except ValueError as exc:
        raise CopyRefused(f"{which}: {_hide_password(str(exc), url)}") from None


def _same(a: str, b: str) -> bool:
    if is_postgres_url(a) or is_postgres_url(b):
        return a == b
    return sqlite_path(a).resolve() == sqlite_path(b).resolve()


def _non_empty(conn: Connection) -> dict[str, int]:
    """The store's tables in TO that hold rows (a table not there yet holds none)."""
    present = set(sa.inspect(conn).get_table_names())
    found = {}
    for table in metadata.sorted_tables:
        if table.name in present:
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            if count:
                found[table.name] = int(count)
    return found


def _refuse_unless_empty(conn: Connection) -> None:
    taken = _non_empty(conn)
    if taken:
        listed = ", ".join(f"{name} ({count} row{'s' * (count != 1)})" for name, count in taken.items())
        raise CopyRefused(f"TO is not empty: {listed}. The copy writes only into an empty database: create a "
                          "new one (createdb), or drop and recreate this one if its rows can go. Nothing was written.")


def _id_high_water(conn: Connection, table: sa.Table, column: sa.Column) -> int:
    """The highest id the database has given in table.column: its counter (which keeps the ids of deleted rows
    taken) or the highest value present, whichever is larger; 0 when none."""
    highest = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(column), 0))).scalar_one())
    if conn.dialect.name == "postgresql":
        sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                                {"t": table.name, "c": column.name}).scalar()
        if sequence:  # a name PostgreSQL quoted itself
            given = conn.execute(sa.text(
                f"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {sequence}")).scalar()
            highest = max(highest, int(given or 0))
    elif conn.execute(sa.text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")).first():
        given = conn.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table.name}).scalar()
        highest = max(highest, int(given or 0))
    return highest


def _set_id_counter(conn: Connection, table: sa.Table, column: sa.Column, highest: int) -> None:
    """TO's next generated id in table.column is highest + 1."""
    if conn.dialect.name == "postgresql":
        sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                                {"t": table.name, "c": column.name}).scalar()
        if sequence is None:
            raise CopyRefused(f"{table.name}.{column.name} has no sequence in TO: is its schema the store's?")
        # As if it had given `highest` (setval(s, n, true): the next is n + 1); none given yet: the next is 1.
        conn.execute(sa.text("SELECT setval(CAST(:s AS regclass), :n, :given)"),
                     {"s": sequence, "n": max(highest, 1), "given": highest >= 1})
    else:  # AUTOINCREMENT's counter: ordinary statements may change it
        conn.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table.name})
        if highest:
            conn.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :n)"),
                         {"t": table.name, "n": highest})


def _batches(conn: Connection, table: sa.Table) -> Iterator[list[dict]]:
    query = sa.select(table).order_by(*table.primary_key.columns)
    result = conn.execute(query, execution_options={"stream_results": True, "max_row_buffer": BATCH})
    for batch in result.mappings().partitions(BATCH):
        yield [dict(row) for row in batch]


def copy_store(source_url: str, target_url: str) -> CopyReport:
    """Copy every row of the store at source_url into the empty store at target_url (see the module's text).
    Raises CopyRefused (nothing written to TO), SchemaTooNew, or a store error (TO rolled back)."""
    source_url, target_url = _check_url(source_url, "FROM"), _check_url(target_url, "TO")
    if _same(source_url, target_url):
        raise CopyRefused("FROM and TO are the same database")
    if not is_postgres_url(source_url) and not sqlite_path(source_url).is_file():
        raise CopyRefused(f"FROM: no such database file: {sqlite_path(source_url)}")
    source = Database(source_url, pool_size=1, max_overflow=0)
    target = Database(target_url, pool_size=1, max_overflow=0)
    try:
        if is_postgres_url(target_url) or sqlite_path(target_url).exists():  # (a file is made by connecting)
            with target.engine.connect() as conn:
                _refuse_unless_empty(conn)  # before FROM is migrated: a refused copy changes nothing
        with source.engine.connect() as conn:
            before = current_revision(conn)
        source.migrate()  # what the next start of this code would do: FROM's rows are kept
        report = CopyReport(source.name, target.name, before)
        with target.write() as out:
            _refuse_unless_empty(out)  # again, under the write lock: nothing came in meanwhile
            upgrade(out, target.name)
            with source.read() as src:
                for table in metadata.sorted_tables:
                    copied = 0
                    try:
                        for rows in _batches(src, table):
                            out.execute(table.insert(), rows)
                            copied += len(rows)
                    except STORE_ERRORS as exc:
                        raise CopyFailed(f"copying {table.name}: {store_error_reason(exc)}") from exc
                    there = out.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                    if there != copied:
                        raise RuntimeError(f"{table.name}: {copied} rows copied but {there} in TO")
                    report.rows[table.name] = copied
                    for column in identity_columns(table):
                        highest = _id_high_water(src, table, column)
                        _set_id_counter(out, table, column, highest)
                        report.next_ids[f"{table.name}.{column.name}"] = highest
        return report
    finally:
        source.dispose()
        target.dispose()


def _print_report(report: CopyReport) -> None:
    revision = report.source_revision or "none (before Alembic, or new)"
    migrated = "" if report.source_revision == HEAD else f", migrated from revision {revision} to {HEAD}"
    print(f"copied {report.source}{migrated}")
    print(f"    -> {report.target} (revision {HEAD}), in one transaction:")
    width = max(len(name) for name in report.rows)
    for name, count in report.rows.items():
        print(f"  {name:<{width}}  {count:>9} rows")
    print(f"  {'total':<{width}}  {sum(report.rows.values()):>9} rows")
    counters = ", ".join(f"{name} after {highest}" for name, highest in report.next_ids.items())
    print(f"new ids continue: {counters}")


def _failed(reason: str, source_url: str, target_url: str) -> int:
    reason = _hide_password(_hide_password(reason, source_url), target_url)
    print(f"db-copy failed: {reason}. Nothing was written to TO (its transaction was rolled back).", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    """FROM and TO as arguments, or (make db-copy: no password in a command line) in DB_COPY_FROM, DB_COPY_TO."""
    if not argv:
        argv = [os.environ.get("DB_COPY_FROM", ""), os.environ.get("DB_COPY_TO", "")]
    if len(argv) != 2 or not all(arg.strip() for arg in argv):
        print(USAGE, file=sys.stderr)
        return 2
    source_url, target_url = argv
    try:
        report = copy_store(source_url, target_url)
    except (CopyRefused, SchemaTooNew) as exc:
        print(f"db-copy refused: {exc}", file=sys.stderr)
        return 1
    except CopyFailed as exc:
        return _failed(str(exc), source_url, target_url)
    except STORE_ERRORS as exc:
        return _failed(store_error_reason(exc), source_url, target_url)
    _print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

