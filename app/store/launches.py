"""Queries of launches: one row per create request, written before its `aws` process starts (crash recovery
and Idempotency-Key replay)."""

import json
from typing import Any

from app.core.clock import utcnow
from app.store.base import StoreBase
from app.store.rows import LaunchRow, LaunchStatus


def launch_row(row: dict[str, Any]) -> LaunchRow:
    item = dict(row)
    item["status"] = LaunchStatus(item["status"])
    return LaunchRow(**item)  # type: ignore[typeddict-item]


class LaunchQueries(StoreBase):
    def claim_launch(self, request_id: str, idempotency_key: str | None, body_hash: str, body: dict,
                     region: str, endpoint: str, owner: str | None = None,
                     admin: bool = True) -> tuple[LaunchRow, bool]:
        """Insert a pending launch, or find the one that holds this Idempotency-Key.

        Returns (launch, claimed). A key is its owner's: one held by someone else (an owner other than
        `owner`; an admin may also use a key of no owner) is returned, never claimed. Under the same key, owner
        and body:
        - a launch whose instance is recorded after all is launched: returned, not claimed;
        - a *lost* launch (its outcome was unknown, and lookups found nothing) is claimed again as it
          was (same request id and recorded parameters), so the retry sends EC2 the exact request it
          sent before, client token and RequestId tag included, and EC2's own dedupe holds;
        - a *failed* one (EC2 refused it) is replaced by a fresh launch.
        """
        now = utcnow()
        with self.write():
            if idempotency_key is not None:
                found = self._one("SELECT * FROM launches WHERE idempotency_key = :key", {"key": idempotency_key})
                if found is not None:
                    row = launch_row(found)
                    if row["status"] not in (LaunchStatus.FAILED, LaunchStatus.LOST) or row["body_hash"] != body_hash:
                        return row, False
                    if row["owner"] != owner and not (admin and row["owner"] is None):
                        return row, False
                    instance = self._one("SELECT id FROM instances WHERE request_id = :rid",
                                         {"rid": row["request_id"]})
                    if instance is not None:
                        self._run("UPDATE launches SET status = :status, instance_id = :iid, error = NULL, "
                                  "updated_at = :now WHERE request_id = :rid",
                                  {"status": LaunchStatus.LAUNCHED.value, "iid": instance["id"], "now": now,
                                   "rid": row["request_id"]})
                        return {**row, "status": LaunchStatus.LAUNCHED, "instance_id": instance["id"]}, False
                    if row["status"] == LaunchStatus.LOST:
                        self._run("UPDATE launches SET status = :status, error = NULL, created_at = :now, "
                                  "updated_at = :now, region = :region, endpoint = :endpoint WHERE request_id = :rid",
                                  {"status": LaunchStatus.PENDING.value, "now": now, "region": region,
                                   "endpoint": endpoint, "rid": row["request_id"]})
                        return {**row, "status": LaunchStatus.PENDING, "created_at": now}, True
                    self._run("DELETE FROM launches WHERE request_id = :rid", {"rid": row["request_id"]})
            self._run(
                "INSERT INTO launches (request_id, idempotency_key, body_hash, body, status, created_at, updated_at, "
                "region, endpoint, owner) VALUES (:rid, :key, :hash, :body, :status, :now, :now, :region, :endpoint, "
                ":owner)",
                {"rid": request_id, "key": idempotency_key, "hash": body_hash, "body": json.dumps(body, sort_keys=True),
                 "status": LaunchStatus.PENDING.value, "now": now, "region": region, "endpoint": endpoint,
                 "owner": owner})
            claimed = self._one("SELECT * FROM launches WHERE request_id = :rid", {"rid": request_id})
            return launch_row(claimed or {}), True

    def finish_launch(self, request_id: str, status: LaunchStatus, instance_id: str | None = None,
                      error: str | None = None) -> None:
        """launched (whatever it was: EC2 shows its instance), or failed / lost (only while pending)."""
        only_pending = "" if status == LaunchStatus.LAUNCHED else " AND status = 'pending'"
        self._run("UPDATE launches SET status = :status, instance_id = COALESCE(:iid, instance_id), error = :error, "
                  f"updated_at = :now WHERE request_id = :rid{only_pending}",
                  {"status": str(status), "iid": instance_id, "error": error, "now": utcnow(), "rid": request_id})

    def claim_unscoped_launches(self, region: str, endpoint: str) -> int:
        """Launches from before schema 2 were sent to the EC2 the server first runs against (a lookup by their
        RequestId settles them either way); instance rows are claimed only when a sweep sees them."""
        with self.write():
            return self._run("UPDATE launches SET region = :region, endpoint = :endpoint WHERE region IS NULL",
                             {"region": region, "endpoint": endpoint})

    def settled_without_instance(self, region: str, endpoint: str) -> dict[str, LaunchRow]:
        """Launches recorded failed or lost, by request id: if EC2 shows one's instance, it launched."""
        return {r["request_id"]: launch_row(r) for r in self._all(
            "SELECT * FROM launches WHERE status IN ('failed', 'lost') AND region = :region AND endpoint = :endpoint",
            {"region": region, "endpoint": endpoint})}

    def get_launch(self, request_id: str) -> LaunchRow | None:
        row = self._one("SELECT * FROM launches WHERE request_id = :rid", {"rid": request_id})
        return launch_row(row) if row else None

    def get_launch_by_key(self, idempotency_key: str) -> LaunchRow | None:
        row = self._one("SELECT * FROM launches WHERE idempotency_key = :key", {"key": idempotency_key})
        return launch_row(row) if row else None

    def pending_launches(self, region: str, endpoint: str) -> list[LaunchRow]:
        return [launch_row(r) for r in self._all(
            "SELECT * FROM launches WHERE status = 'pending' AND region = :region AND endpoint = :endpoint",
            {"region": region, "endpoint": endpoint})]

    def unresolved_launches(self, endpoint: str) -> list[LaunchRow]:
        """Launches of this endpoint (any region) whose outcome is not known yet: they hold budget."""
        return [launch_row(r) for r in self._all(
            "SELECT * FROM launches WHERE status = 'pending' AND endpoint = :endpoint", {"endpoint": endpoint})]
