"""The REST contract suite's paths that WRITE the store (test_api.py), on PostgreSQL (DATABASE_URL=postgresql://...).

Only what differs by engine runs twice: a create (its reservation, launch record, instance and event), the
transitions and the events they write, the sweep's writes (adoption, which seeds the lifecycle test's instance,
and the state changes it observes after each transition) and a refused create (its launch and reservation
undone). Validation, refusals before any write, 404s and the docs answer before the store is asked: SQLite's run
covers them. So do the create's `aws` processes (the same three on either engine) and the sweep filling in a new
instance's state and address: that is the one UPDATE the stop, the start and the delete below write through
(recorder.observe). The store's own queries, transactions, locks and migrations run on both engines in the store
suite (tests/store/). Left out too, each with what covers it on PostgreSQL:
- the list leaving out terminated instances unless asked: the filter is the store's list query, which
  tests/store/test_queries.py runs on both engines (list_instances and the rendered list, with and without
  include_terminated); the writes it lists (an adoption, a sweep seeing an instance terminated) are the lifecycle
  test's.
- a sync adopting tagged instances and ignoring untagged ones: the adoption (its row and its "adopt" event) is
  written here by the lifecycle test's seeding; the untagged one is left out by the describe-instances filter,
  before the store; the adopted fields read back are a stored row, as in the store suite.
- changes made outside the API showing up (a server of its own, sweeping every second): on PostgreSQL only the
  leader sweeps, and tests/test_replicas.py runs that loop on PostgreSQL (a new leader adopts an instance launched
  outside the API within two intervals; the pair sweeps about once per interval); the states it records are
  recorder.observe's UPDATE, written here after each transition.
- /health answering while four creates run: /health never asks the store; concurrent creates on one PostgreSQL
  server (the write lock, the pool) run in tests/postgres/test_lifecycle_on_postgres.py (five at once, one key),
  concurrent creates on two replicas sharing one budget in tests/test_replicas.py, and the pool under fifty
  concurrent requests in tests/store/test_pool_on_a_server.py.
"""

# Collected here once more, on PostgreSQL, in this order (test_api.py's): the events test stops the instance
# `made` created, after the create test has read its answer.
from test_api import (  # noqa: F401, I001
    client,
    made,
    test_create_answers_at_once_with_the_resolved_ami_and_tags_in_ec2,
    test_stop_start_delete_lifecycle,
    test_events_record_each_state_change,
    test_missing_key_pair_is_400_with_the_fix,
)

DB_ENGINE = "postgres"
