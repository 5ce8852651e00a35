"""The REST contract suite (test_api.py), on PostgreSQL (DATABASE_URL=postgresql://...)."""

from test_api import *  # noqa: F403  (its tests and fixtures, collected here once more)

DB_ENGINE = "postgres"
