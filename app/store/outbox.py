"""Queries of the notifications outbox: one row per notification, one delivery per channel."""

import json

import sqlalchemy as sa

from app.core.clock import utcnow
from app.store.base import StoreBase
from app.store.events import NOTIFY_ENABLED
from app.store.kv import KvQueries


class OutboxQueries(KvQueries, StoreBase):
    def enable_notifications(self) -> None:
        """From now on instance events queue notifications (add_event reads this). Never switched off: another
        replica may still send; rows nobody sends are dropped as old news."""
        self.kv_set(NOTIFY_ENABLED, "1")

    def queue_notification(self, key: str, event: str, instance_id: str | None, data: dict) -> bool:
        """A notification that is not an instance event (an auto-stop warning, a budget crossing); once per key."""
        return self._run(
            "INSERT INTO notifications (key, event, instance_id, data, at) VALUES (:key, :event, :iid, :data, :at) "
            "ON CONFLICT DO NOTHING",
            {"key": key, "event": event, "iid": instance_id, "data": json.dumps(data), "at": utcnow()}) == 1

    def unexpanded_notifications(self, limit: int) -> list[dict]:
        return self._all(
            "SELECT n.id, n.event, n.at, e.action, e.source, e.from_state, e.to_state FROM notifications n "
            "LEFT JOIN instance_events e ON e.seq = n.event_seq WHERE n.expanded = 0 ORDER BY n.id LIMIT :limit",
            {"limit": limit})

    def expand_notification(self, notification_id: int, event: str | None, channels: list[str]) -> None:
        """Name the notification and give it one pending delivery per channel, at once."""
        now = utcnow()
        with self.write(instances=False) as conn:
            conn.execute(sa.text("UPDATE notifications SET event = :event, expanded = 1 WHERE id = :id"),
                         {"event": event, "id": notification_id})
            if channels:
                conn.execute(sa.text(
                    "INSERT INTO deliveries (notification_id, channel, status, next_at, created_at) "
                    "VALUES (:id, :channel, 'pending', :now, :now) ON CONFLICT DO NOTHING"),
                    [{"id": notification_id, "channel": c, "now": now} for c in channels])

    def claim_deliveries(self, now: str, lease_until: str, limit: int) -> list[dict]:
        """Take up to `limit` due deliveries for `lease_until` (another replica skips them meanwhile)."""
        due = ("SELECT id FROM deliveries WHERE status = 'pending' AND next_at <= :now AND "
               "(lease_until IS NULL OR lease_until <= :now) ORDER BY next_at, id LIMIT :limit")
        if self._one(due, {"now": now, "limit": 1}) is None:
            return []  # the usual answer, without taking the write lock
        with self.write(instances=False) as conn:
            ids = [r["id"] for r in self._all(due, {"now": now, "limit": limit})]
            if not ids:
                return []
            marks: sa.BindParameter = sa.bindparam("ids", expanding=True)
            conn.execute(sa.text("UPDATE deliveries SET lease_until = :lease WHERE id IN :ids").bindparams(marks),
                         {"lease": lease_until, "ids": ids})
            rows = conn.execute(sa.text(
                "SELECT d.id, d.channel, d.attempts, d.created_at, n.key, n.event, n.instance_id, n.data, n.at "
                "FROM deliveries d JOIN notifications n ON n.id = d.notification_id WHERE d.id IN :ids "
                "ORDER BY d.next_at, d.id").bindparams(marks), {"ids": ids}).mappings()
            return [dict(r) for r in rows]

    def finish_delivery(self, delivery_id: int, status: str, error: str | None, next_at: str | None,
                        lease: str) -> None:
        """Record a try, if our lease still holds (a replica that took the delivery over records its own)."""
        self._run(
            "UPDATE deliveries SET status = :status, attempts = attempts + 1, "
            "last_error = COALESCE(:error, last_error), next_at = :next_at, lease_until = NULL, sent_at = :sent "
            "WHERE id = :id AND lease_until = :lease",
            {"status": status, "error": error, "next_at": next_at, "sent": utcnow() if status == "sent" else None,
             "id": delivery_id, "lease": lease})

    def release_deliveries(self, ids: list[int], lease: str) -> None:
        if ids:
            self._run("UPDATE deliveries SET lease_until = NULL WHERE id = :id AND lease_until = :lease",
                      [{"id": i, "lease": lease} for i in ids])

    def list_deliveries(self, limit: int) -> list[dict]:
        return self._all(
            "SELECT d.id, n.key, n.event, n.instance_id, d.channel, d.status, d.attempts, d.created_at, d.sent_at, "
            "d.next_at, d.last_error FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
            "ORDER BY d.id DESC LIMIT :limit", {"limit": limit})
