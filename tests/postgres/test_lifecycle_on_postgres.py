"""The lifecycle suite's paths that differ by engine (tests/test_lifecycle.py), on PostgreSQL: a retried and a
concurrent idempotent create (the launch record under the write lock), racing mutations (the instance locks),
a crash and a graceful shutdown mid-create (what the store kept). Key validation and the client token are the
same on both engines: SQLite's run covers them.
"""

from tests.test_lifecycle import (  # noqa: F401  (collected here once more, on PostgreSQL)
    api,
    client,
    server,
    test_concurrent_retries_with_one_key_launch_once,
    test_kill_9_mid_burst_then_restart_tracks_every_instance_once,
    test_same_key_same_body_returns_the_same_instance_without_a_second_launch,
    test_sigterm_lets_an_in_flight_create_finish_and_be_recorded,
    test_start_and_stop_racing_end_consistent,
)

DB_ENGINE = "postgres"
