"""The REST contract suite's paths that WRITE the store (test_api.py), on PostgreSQL (DATABASE_URL=postgresql://...).

Only what differs by engine runs twice: a create, the sweep's writes (adoption, state changes, the periodic loop
that only a leader runs on PostgreSQL), the transitions and their events, the list's filters over what was
written, concurrent creates (the write lock, the pool) and a refused create (its launch and reservation undone).
Validation, refusals before any write, 404s and the docs answer before the store is asked: SQLite's run covers
them. So do the create's `aws` processes (the same three on either engine) and the sweep filling in a new
instance's state and address: that is the one UPDATE the stop, the start and the outside changes below write
through (recorder.observe). The store's own queries, transactions, locks and migrations run on both engines in
the store suite.
"""

from test_api import (  # noqa: F401  (collected here once more, on PostgreSQL)
    client,
    looping_api,
    test_changes_made_outside_the_api_show_up,
    test_create_answers_at_once_with_the_resolved_ami_and_tags_in_ec2,
    test_events_record_each_state_change,
    test_health_answers_while_creates_run,
    test_list_leaves_out_terminated_unless_asked,
    test_missing_key_pair_is_400_with_the_fix,
    test_stop_start_delete_lifecycle,
    test_sync_adopts_tagged_instances_and_ignores_untagged,
)

DB_ENGINE = "postgres"
