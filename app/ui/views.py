"""What the pages show, computed from the store and the spend ledger (never from AWS): the instances table with
each row's cost, uptime and next action, and the spend banner."""

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from app.api.errors import validation_body
from app.auth.tokens import Caller
from app.budget.spending import Spending
from app.core import clock
from app.core.clock import parse_time
from app.instances.schemas import InstanceFilter
from app.store import Database
from app.store.instances import next_action

PAGE_SIZE = 200  # rows per page of the instances table


def duration(seconds: float) -> str:
    """`3 d 4 h`, `2 h 5 min`, `12 min`, `40 s`."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{secs} s"


@dataclass(frozen=True)
class Banner:
    budget_usd: float
    spent_usd: float
    committed_usd: float

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.budget_usd - self.committed_usd)

    @property
    def used_percent(self) -> float:
        return min(100.0, 100 * self.committed_usd / self.budget_usd) if self.budget_usd else 100.0


def banner(spending: Spending) -> tuple[Banner, dict[str, float]]:
    """The spend banner, and each instance's spend this period (by id)."""
    summary = spending.summary()
    spent = {item["id"]: item["spent_usd"] for item in summary.instances}
    return Banner(spending.budget_usd, summary.spent_usd, summary.committed_usd), spent


def instance_rows(db: Database, spent: Mapping[str, float], caller: Caller, wanted: InstanceFilter,
                  page: int = 1, now: datetime | None = None) -> tuple[list[dict[str, Any]], int]:
    """The rows of one page of the instances table (the caller's own, or all for an admin) and how many match."""
    now = now or clock.now()
    rows = [r for r in db.list_instances(wanted.asks_for_ended) if caller.may_see(r["owner"]) and wanted.matches(r)]
    total = len(rows)
    rows = rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    started = db.last_started() if rows else {}
    shown = []
    for row in rows:
        since = parse_time(started.get(row["id"])) if row["state"] in ("pending", "running") else None
        action = next_action(row)
        at = parse_time(action["at"]) if action else None
        shown.append({
            "id": row["id"], "name": row["name"], "state": str(row["state"]), "type": row["instance_type"],
            "region": row["region"], "public_ip": row["public_ip"], "owner": row["owner"],
            "uptime": duration((now - since).total_seconds()) if since else None,
            "cost": spent.get(row["id"], 0.0), "schedule": row["schedule"],
            "next": None if action is None or at is None else {
                **action, "in": duration((at - now).total_seconds()), "overdue": at <= now},
        })
    return shown, total


def outcome(action: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """One row's outcome of a bulk action, as its row shows it."""
    status = result["status"]
    if status == 202:
        text = f"{action}: accepted"
    elif status == 200:
        text = f"{action}: nothing to do"
    else:
        text = f"{action} refused: {(result.get('error') or {}).get('detail') or status}"
    return {"status": status, "css": "ok" if status < 300 else "refused", "text": text}


class Outcomes:
    """Each session's last bulk outcomes, shown in its rows for OUTCOME_SECONDS (the live stream re-renders the rows;
    they must not vanish with the next update). In this process's memory: a replica that did not take the request
    streams the rows without them."""

    OUTCOME_SECONDS = 600.0

    def __init__(self) -> None:
        self._kept: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}

    def keep(self, sid: str, outcomes: dict[str, dict[str, Any]]) -> None:
        now = time.monotonic()
        self._kept = {k: v for k, v in self._kept.items() if v[0] > now}
        self._kept[sid] = (now + self.OUTCOME_SECONDS, outcomes)

    def of(self, sid: str) -> dict[str, dict[str, Any]]:
        kept = self._kept.get(sid)
        return kept[1] if kept and kept[0] > time.monotonic() else {}


class RowsCache:
    """The table's rows, computed once per (store revision, whose view, filter, page) and half minute, for every
    open tab of this process: a change to one instance costs one computation, not one per tab (the live streams
    all ask at once)."""

    BUCKET_SECONDS = 30  # uptimes and countdowns are shown to the minute: recomputed at least this often
    SIZE = 64

    def __init__(self) -> None:
        self._kept: dict[tuple, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, db: Database, spending: Spending, caller: Caller, wanted: InstanceFilter,
            page: int) -> list[dict[str, Any]]:
        view = "*" if caller.is_admin else caller.name
        key = (db.revision(), view, wanted, page, int(time.time() // self.BUCKET_SECONDS))
        with self._lock:
            found = self._kept.get(key)
        if found is None:
            _, spent = banner(spending)
            found, _ = instance_rows(db, spent, caller, wanted, page)
            with self._lock:
                if len(self._kept) >= self.SIZE:
                    self._kept.clear()
                self._kept[key] = found
        return found


def body_errors(exc: ValidationError, body: dict, model: type[BaseModel]) -> dict:
    """The API's 422 body for a form's `body` that `model` refused (its `detail` and each of its `errors`)."""
    return validation_body([{**err, "loc": ("body", *err.get("loc", ()))} for err in exc.errors()], body,
                           model=model)
