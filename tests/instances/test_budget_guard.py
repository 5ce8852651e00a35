"""The budget guard's decisions on a real SQLite store: notify-only mode and a prices file that changes.
(Stopping through EC2 at a month's start: tests/test_budget_guard.py, with the real server and moto.)"""

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import sqlalchemy as sa

from app.budget.spending import PriceBook, Spending
from app.config import DEFAULT_PRICES_FILE, Settings
from app.core import clock
from app.instances.budget_guard import BudgetGuard
from app.store import Database

NOW = datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC)


class NoAws:
    """The notify mode must never call EC2."""

    async def run(self, *args, **kwargs):
        raise AssertionError(f"aws was called: {args}")


def _running(db: Database, instance_id: str, minutes_ago: float) -> None:
    at = (clock.now() - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    db.upsert_instance({"id": instance_id, "name": instance_id, "instance_type": "t3.micro", "region": "us-east-1",
                        "endpoint": "", "state": "running", "storage_gb": 8, "created_at": at, "updated_at": at})
    db.add_event(instance_id, "create", None, "running", "api", at=at)


def _guard(db: Database, spending: Spending, mode: str) -> BudgetGuard:
    settings = Settings(_env_file=None, budget_enforcement=mode)
    recorder = SimpleNamespace(account=None, endpoint="", transitions=set())
    return BudgetGuard(settings, db, NoAws(), spending, recorder, SimpleNamespace())  # type: ignore[arg-type]


def test_notify_mode_stops_nothing_and_notifies_once_per_instance_and_month(tmp_path):
    db = Database(tmp_path / "i.db")
    db.migrate()
    db.enable_notifications()
    try:
        clock.start_at(NOW)
        _running(db, "i-00000000000000001", 2)
        _running(db, "i-00000000000000002", 1)
        month = 31 * 24 * (0.0104 + 8 * 0.08 / 730)
        spending = Spending(1.5 * month, PriceBook.load(DEFAULT_PRICES_FILE), db, "us-east-1", "")
        guard = _guard(db, spending, "notify")
        assert asyncio.run(guard.check()) == ["i-00000000000000002"]  # the newer run would be stopped
        assert asyncio.run(guard.check()) == ["i-00000000000000002"]  # still over: said again, queued once
        with db.read() as conn:
            notes = conn.execute(sa.text("SELECT event, instance_id, data FROM notifications WHERE event = "
                                         "'budget_enforced'")).mappings().all()
        assert [(n["event"], n["instance_id"]) for n in notes] == [("budget_enforced", "i-00000000000000002")]
        assert json.loads(notes[0]["data"])["enforcement"] == "notify"
        assert {r["state"] for r in db.list_instances(False)} == {"running"}  # nothing stopped
    finally:
        clock.start_at(None)


def test_a_changed_prices_file_is_read_again_and_can_put_the_month_over_budget(tmp_path):
    db = Database(tmp_path / "i.db")
    db.migrate()
    prices = tmp_path / "prices.json"
    shutil.copyfile(DEFAULT_PRICES_FILE, prices)
    try:
        clock.start_at(NOW)
        _running(db, "i-00000000000000001", 1)
        spending = Spending(20.0, PriceBook.load(prices), db, "us-east-1", "")
        assert spending.over_budget()[1] == []
        doc = json.loads(prices.read_text())
        doc["regions"]["us-east-1"]["instance_hourly"]["t3.micro"] = 1.0  # a month of it: 744 USD
        prices.write_text(json.dumps(doc))
        assert spending.reload_prices()
        committed, chosen = spending.over_budget()
        assert committed > 700 and [r["id"] for r in chosen] == ["i-00000000000000001"]
        prices.write_text("{not json")  # a file gone bad: the prices in force stay
        assert not spending.reload_prices() and spending.over_budget()[0] == committed
    finally:
        clock.start_at(None)
