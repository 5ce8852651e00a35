"""The lifecycle suite's paths that differ by engine (tests/test_lifecycle.py), on PostgreSQL: concurrent
idempotent creates (the launch record under the write lock: one claims it, the others wait and replay it),
racing mutations (the instance locks), a graceful shutdown and a crash mid-create (what the store kept). Key
validation, the client token and the replay's headers are the same on both engines: SQLite's run covers them, as
it does the single retried create, which the concurrent test's replays also run here.
"""

# Collected here once more, on PostgreSQL, in this order (test_lifecycle.py's): the crash test, which resets EC2
# for a server of its own, comes last.
from tests.test_lifecycle import (  # noqa: F401, I001
    api,
    client,
    server,
    test_concurrent_retries_with_one_key_launch_once,
    test_start_and_stop_racing_end_consistent,
    test_sigterm_lets_an_in_flight_create_finish_and_be_recorded,
    test_kill_9_mid_burst_then_restart_tracks_every_instance_once,
)

DB_ENGINE = "postgres"
