"""Queries of instance_events: the history of each instance. An event's notification (while notifications
are on) is written by the same code, in the same transaction: no crash keeps one without the other."""

import json
from datetime import timedelta

import sqlalchemy as sa

from app.core import clock
from app.core.clock import TIME_FORMAT, period_bounds, utcnow
from app.core.context import REQUEST_ID
from app.store.base import StoreBase
from app.store.instances import EVENT_COLUMNS, event_row
from app.store.rows import EventRow

NOTIFY_ENABLED = "notify_enabled"  # the kv key: instance events queue notifications while it exists


class EventQueries(StoreBase):
    def add_event(self, instance_id: str, action: str, from_state: str | None, to_state: str | None,
                  source: str, request_id: str | None = None, aws_error: str | None = None,
                  at: str | None = None, public_ip: str | None = None, actor: str | None = None,
                  http_request_id: str | None = None, detail: str | None = None) -> None:
        """actor: who asked for it through the API (None: the reconciler, the auto-stop, a server without tokens);
        http_request_id: the X-Request-Id of the HTTP request that caused it; by default the running request's
        (app/core/context.py), so every path that writes an event keeps it (None outside a request); detail: why
        (a refused scheduled start, a snooze), also in its notification."""
        at = at or utcnow()
        if http_request_id is None:
            running = REQUEST_ID.get()
            http_request_id = None if running == "-" else running
        values = {"instance_id": instance_id, "at": at, "action": action,
                  "from_state": None if from_state is None else str(from_state),
                  "to_state": None if to_state is None else str(to_state), "source": source,
                  "request_id": request_id, "aws_error": aws_error, "public_ip": public_ip, "actor": actor,
                  "http_request_id": http_request_id, "detail": detail}
        with self._writing() as conn:
            seq = conn.execute(sa.text(
                "INSERT INTO instance_events (instance_id, at, action, from_state, to_state, source, request_id, "
                "aws_error, public_ip, actor, http_request_id, detail) VALUES (:instance_id, :at, :action, "
                ":from_state, :to_state, :source, :request_id, :aws_error, :public_ip, :actor, :http_request_id, "
                ":detail) RETURNING seq"),
                values).scalar_one()
            data = {"to_state": values["to_state"], "public_ip": public_ip, "http_request_id": http_request_id,
                    **({"detail": detail} if detail else {})}
            conn.execute(sa.text(
                "INSERT INTO notifications (key, event_seq, instance_id, data, at) "
                "SELECT :key, :seq, :instance_id, :data, :at WHERE EXISTS (SELECT 1 FROM kv WHERE key = :enabled) "
                "ON CONFLICT DO NOTHING"),
                {"key": f"event:{seq}", "seq": seq, "instance_id": instance_id, "data": json.dumps(data), "at": at,
                 "enabled": NOTIFY_ENABLED})

    def last_stop_source(self, instance_id: str) -> str | None:
        """Who stopped the instance last: the source of its newest event into stopping or stopped (None: none)."""
        return self._scalar("SELECT source FROM instance_events WHERE instance_id = :id AND to_state IN "
                            "('stopping', 'stopped') ORDER BY seq DESC LIMIT 1", {"id": instance_id})

    def list_events(self, instance_id: str) -> list[EventRow]:
        return [event_row(r) for r in self._all(
            f"SELECT {EVENT_COLUMNS} FROM instance_events WHERE instance_id = :id ORDER BY seq", {"id": instance_id})]

    def prune(self, before: str) -> tuple[int, int]:
        """Forget events and finished launches older than `before`; instance rows are never pruned.

        Events are kept back to the start of the previous budget period whatever `before` says: the spend
        ledger replays them to know what this month and the last one cost (a short retention must not
        erase spending and let the budget admit more)."""
        this_month = period_bounds(clock.now())[0]
        last_month = period_bounds(this_month - timedelta(microseconds=1))[0].strftime(TIME_FORMAT)
        events_before = min(before, last_month)
        with self.write() as conn:
            # Each instance keeps its newest event (its history starts there) and its newest state change
            # before the cutoff: its state when the previous period began, which the ledger counts from.
            events = conn.execute(sa.text(
                "DELETE FROM instance_events WHERE at < :before "
                "AND seq NOT IN (SELECT MAX(seq) FROM instance_events GROUP BY instance_id) "
                "AND seq NOT IN (SELECT MAX(seq) FROM instance_events WHERE at < :before AND to_state IS NOT NULL "
                "GROUP BY instance_id)"), {"before": events_before}).rowcount
            launches = conn.execute(sa.text("DELETE FROM launches WHERE status != 'pending' AND updated_at < :before"),
                                    {"before": before}).rowcount
            # Notifications with every delivery finished (or none at all), like the events they tell of.
            conn.execute(sa.text("DELETE FROM deliveries WHERE status != 'pending' AND created_at < :before"),
                         {"before": before})
            # A budget crossing is kept for two months whatever the retention: it is sent once per month.
            keep_budget = (clock.now() - timedelta(days=62)).strftime(TIME_FORMAT)
            conn.execute(sa.text(
                "DELETE FROM notifications WHERE at < :before AND (event IS NULL OR event NOT LIKE 'budget%' "
                "OR at < :keep) AND id NOT IN (SELECT notification_id FROM deliveries)"),
                {"before": before, "keep": keep_budget})
        return events, launches
