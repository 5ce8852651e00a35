"""The store suite runs every test on both engines: a SQLite file and a database of the private PostgreSQL
cluster (tests/support/postgres.py)."""

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from app.store import Database


@pytest.fixture(params=["sqlite", "postgres"])
def engine_name(request) -> str:
    return request.param


@pytest.fixture
def db_url(engine_name, request, tmp_path) -> str:
    """An empty database of the test's engine: a postgresql:// URL or a SQLite file path."""
    if engine_name == "postgres":
        return request.getfixturevalue("pg_cluster").new_database()
    return str(tmp_path / "x.db")


@pytest.fixture
def open_store(db_url) -> Iterator:
    """Database(db_url, **options) as many times as a test wants (several replicas); every one closed after."""
    opened: list[Database] = []

    def open_(**options: Any) -> Database:
        store = Database(db_url, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.dispose()


@pytest.fixture
def new_db(open_store) -> Database:
    """An empty, migrated store on the test's engine."""
    store = open_store()
    store.migrate()
    return store


def execute(store: Database, sql: str, params: dict[str, Any] | None = None) -> list[tuple]:
    """Raw SQL in a write transaction of the store (a test's setup); its rows, if any."""
    with store.write() as conn:
        result = conn.execute(sa.text(sql), params or {})
        return [tuple(r) for r in result] if result.returns_rows else []
