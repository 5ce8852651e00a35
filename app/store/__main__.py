"""`python -m app.store upgrade` (make db-upgrade): bring DATABASE_URL's database to the head revision, as
the service does at start (adopting a database made before Alembic, under the write lock)."""

import sys

from app.config import Settings
from app.store import Database, SchemaTooNew, open_database


def main(argv: list[str]) -> int:
    if argv != ["upgrade"]:
        print("usage: python -m app.store upgrade", file=sys.stderr)
        return 2
    settings = Settings()
    store: Database = open_database(settings.database_url, settings.database_path, pool_size=1, max_overflow=0)
    try:
        store.migrate()
    except SchemaTooNew as exc:
        print(f"ec2-creator-local: {exc}", file=sys.stderr)
        return 1
    finally:
        store.dispose()
    print(f"{store.name}: at the head revision")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
