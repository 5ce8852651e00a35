"""The store: SQLAlchemy Core on SQLite or PostgreSQL, a pool, Alembic migrations (app/store/migrations).

    store = open_database(settings.database_url, settings.database_path)
    store.migrate()
    with store.write():          # one write transaction (the write lock), reads inside use it
        store.update_instance(...)
"""

from app.store.database import Database, open_database
from app.store.engine import STORE_ERRORS, WRITE_LOCK, LockSession, advisory_key, is_postgres_url, redact_url
from app.store.instances import canonical_json
from app.store.schema import SCHEMA_VERSION, SchemaTooNew

__all__ = ["SCHEMA_VERSION", "STORE_ERRORS", "WRITE_LOCK", "Database", "LockSession", "SchemaTooNew",
           "advisory_key", "canonical_json", "is_postgres_url", "open_database", "redact_url"]
