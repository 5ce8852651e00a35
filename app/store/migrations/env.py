"""Alembic's entry: run the revisions on the connection the store hands over (app/store/schema.py: under the
write lock, after adopting a database made before Alembic), or on DATABASE_URL from the command line."""

import os

from alembic import context

from app.store.tables import metadata

config = context.config


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from app.config import Settings  # .env as the service reads it

    return Settings().database_url


def run_offline() -> None:
    """`alembic upgrade A:B --sql`: the SQL a DBA runs, for the engine of DATABASE_URL."""
    from app.store.engine import is_postgres_url

    url = "postgresql+psycopg://" if is_postgres_url(_database_url()) else "sqlite://"
    context.configure(url=url, target_metadata=metadata, literal_binds=True, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # the command line: the store's engine, under its write lock
        from app.store.database import Database

        store = Database(_database_url(), pool_size=1, max_overflow=0)
        try:
            with store.write(instances=False) as conn:
                context.configure(connection=conn, target_metadata=metadata, transactional_ddl=True)
                with context.begin_transaction():
                    context.run_migrations()
        finally:
            store.dispose()
        return
    context.configure(connection=connection, target_metadata=metadata, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
