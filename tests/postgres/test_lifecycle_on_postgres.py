"""The lifecycle suite (tests/test_lifecycle.py: retry-safe create, serialised mutations, crash and
shutdown recovery), on PostgreSQL."""

from tests.test_lifecycle import *  # noqa: F403  (its tests and fixtures, collected here once more)

DB_ENGINE = "postgres"
