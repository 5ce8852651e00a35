"""The spend guard: prices, each instance's spend from its recorded state history, and admission.

What costs money (on-demand Linux): instance-hours while pending or running; a public IPv4 address
per hour while one is recorded on a pending or running instance; gp3 storage per GB-month while the
instance is not terminated (stopped too). A month is 730 hours, as AWS prorates GB-months.

Spent is counted from the start of the budget period (the calendar month, UTC) to now. The
projection runs compute and IPv4 until the instance's `stop_at` (or the period end when it has
none) and storage until the period end. Committed = spent + every projection; a create or start is
admitted only while committed plus its own projection stays within BUDGET_USD.
"""

import asyncio
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.errors import ApiError, Conflict, PolicyViolation
from app.models.rows import EventRow, InstanceRow, InstanceState
from app.services import clock
from app.services.db import STORE_ERRORS, TIME_FORMAT, Database, PostgresDatabase, parse_time, utcnow
from app.services.tasks import LoopTask

log = logging.getLogger("ec2_creator.spending")

HOURS_PER_MONTH = 730.0
DEFAULT_STORAGE_GB = 8  # what an instance we did not launch is assumed to have (the AMIs' usual root size)
COMPUTE_STATES = (InstanceState.PENDING, InstanceState.RUNNING)


@dataclass(frozen=True)
class RegionPrices:
    instance_hourly: dict[str, float]
    gp3_gb_month: float
    public_ipv4_hourly: float
    source: str
    as_of: str


@dataclass(frozen=True)
class PriceBook:
    regions: dict[str, RegionPrices]
    path: Path

    @classmethod
    def load(cls, path: Path) -> "PriceBook":
        """Read and check a prices file; a ValueError says what is wrong in it."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"PRICES_FILE {path}: cannot be read as JSON ({exc})") from None
        regions: dict[str, RegionPrices] = {}
        if not isinstance(doc, dict) or not isinstance(doc.get("regions"), dict) or not doc["regions"]:
            raise ValueError(f"PRICES_FILE {path}: needs a non-empty \"regions\" object")
        for name, entry in doc["regions"].items():
            try:
                hourly = {str(t): _price(p) for t, p in entry["instance_hourly"].items()}
                regions[name] = RegionPrices(hourly, _price(entry["gp3_gb_month"]),
                                             _price(entry["public_ipv4_hourly"]), str(entry["source"]),
                                             str(entry["as_of"]))
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise ValueError(f"PRICES_FILE {path}: region {name!r} needs instance_hourly (type: USD per "
                                 "hour), gp3_gb_month, public_ipv4_hourly, source and as_of, with prices as "
                                 f"non-negative numbers ({exc!r})") from None
        return cls(regions, Path(path))

    def hourly(self, instance_type: str | None, region: str | None) -> float | None:
        prices = self.regions.get(region or "")
        return prices.instance_hourly.get(instance_type or "") if prices else None


def _price(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"not a price: {value!r}")
    return float(value)


def period_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The budget period: the calendar month (UTC) holding `now`."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def _hours(a: datetime, b: datetime) -> float:
    return max(0.0, (b - a).total_seconds() / 3600)


@dataclass
class Cost:
    spent_usd: float = 0.0
    projected_usd: float = 0.0
    priced: bool = True  # False: no price for its type and region, so compute is not counted


@dataclass(frozen=True)
class Rates:
    """What one instance costs per hour in each of its states."""

    compute: float  # while pending or running
    ipv4: float  # while pending or running with a public address
    storage: float  # while not terminated

    @classmethod
    def of(cls, book: PriceBook, instance_type: str | None, region: str | None,
           storage_gb: int | None) -> "Rates | None":
        prices = book.regions.get(region or "")
        hourly = book.hourly(instance_type, region)
        if prices is None or hourly is None:
            return None
        gb = storage_gb if storage_gb is not None else DEFAULT_STORAGE_GB
        return cls(hourly, prices.public_ipv4_hourly, gb * prices.gp3_gb_month / HOURS_PER_MONTH)

    def while_in(self, state: str, has_ip: bool) -> float:
        if state in COMPUTE_STATES:
            return self.compute + (self.ipv4 if has_ip else 0.0) + self.storage
        return 0.0 if InstanceState(state).ended else self.storage

    def projection(self, now: datetime, stop_at: datetime | None, end: datetime, has_ip: bool,
                   running: bool = True, storage: bool = True) -> float:
        """From now: compute (and IPv4) until stop_at or the period end, storage until the period end."""
        cost = self.storage * _hours(now, end) if storage else 0.0
        if running:
            until = min(max(stop_at, now), end) if stop_at else end
            cost += (self.compute + (self.ipv4 if has_ip else 0.0)) * _hours(now, until)
        return cost


@dataclass(frozen=True)
class History:
    """An instance's ledger as of its last recorded change: what it spent up to then, and how it is
    spending since, so that its cost at any later time is one multiplication."""

    row: InstanceRow
    rates: Rates
    priced: bool
    spent_before: float  # in [period start, since)
    since: datetime | None  # its last state change (None: no history, nothing spent)
    rate_now: float  # USD per hour since then
    stop_at: datetime | None

    @classmethod
    def of(cls, row: InstanceRow, events: Iterable[EventRow], book: PriceBook, start: datetime) -> "History":
        rates = Rates.of(book, row["instance_type"], row["region"], row["storage_gb"])
        priced = rates is not None
        if rates is None:
            prices = book.regions.get(row["region"] or "")
            gb = row["storage_gb"] if row["storage_gb"] is not None else DEFAULT_STORAGE_GB
            # No price for the type: storage is still counted (when the region is known), compute is not.
            rates = Rates(0.0, prices.public_ipv4_hourly, gb * prices.gp3_gb_month / HOURS_PER_MONTH) if prices \
                else Rates(0.0, 0.0, 0.0)
        timeline = [(at, e["to_state"], bool(e["public_ip"])) for e in events
                    if e["to_state"] and (at := parse_time(e["at"])) is not None]
        born = parse_time(row["created_at"])
        if timeline and born and born < timeline[0][0]:  # adopted: it ran before we first recorded it
            timeline[0] = (born, *timeline[0][1:])
        if not timeline and born:  # no history kept (pruned, or a database from before events): as it is now
            timeline = [(born, row["state"], bool(row["public_ip"]))]
        spent = 0.0
        for (at, state, has_ip), (until, _, _) in zip(timeline, timeline[1:], strict=False):
            spent += rates.while_in(state, has_ip) * _hours(max(at, start), until)
        since, rate_now = None, 0.0
        if timeline:
            since = timeline[-1][0]
            rate_now = rates.while_in(timeline[-1][1], bool(row["public_ip"]))  # what is recorded now
        return cls(row, rates, priced, spent, since, rate_now, parse_time(row["stop_at"]))

    def cost(self, start: datetime, end: datetime, now: datetime) -> Cost:
        spent = self.spent_before
        if self.since is not None:
            spent += self.rate_now * _hours(max(self.since, start), now)
        state = self.row["state"]
        projected = 0.0
        if not state.ended:
            projected = self.rates.projection(now, self.stop_at, end, bool(self.row["public_ip"]),
                                              running=state in COMPUTE_STATES)
        return Cost(round(spent, 6), round(projected, 6), self.priced)


def instance_cost(row: InstanceRow, events: Iterable[EventRow], book: PriceBook, start: datetime, end: datetime,
                  now: datetime) -> Cost:
    """Spend in [start, now) from the state history, and the projection from now to `end`."""
    return History.of(row, events, book, start).cost(start, end, now)


@dataclass
class Summary:
    at: datetime
    period_start: datetime
    period_end: datetime
    spent_usd: float
    committed_usd: float
    instances: list[dict] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)


class Spending:
    """Prices, the ledger of this EC2 (endpoint and region) and admission against BUDGET_USD."""

    def __init__(self, budget_usd: float, book: PriceBook, db: Database, region: str, endpoint: str,
                 reservation_seconds: float = 600.0) -> None:
        self.budget_usd = budget_usd
        self.book = book
        self.db = db
        self.region = region
        self.endpoint = endpoint
        self._lock = threading.Lock()
        # id -> (its history, spent + projected when last read); re-read only when the row changes.
        self._entries: dict[str, tuple[History, float]] = {}
        self._generation = -1
        self._period: datetime | None = None
        self._rev = 0  # the newest row revision read
        self._reserved: dict[str, float] = {}  # admitted creates and starts whose record is not written yet
        # Several replicas on one PostgreSQL database: the reservations live in the database, where every
        # replica's admission sees them; each expires after `reservation_seconds` (its replica may have died).
        self.shared = isinstance(db, PostgresDatabase)
        self.reservation_seconds = reservation_seconds

    # -- pricing a request ----------------------------------------------------------------------
    def rates_for(self, instance_type: str, storage_gb: int) -> Rates:
        """The rates of a new instance here, or 400 price_unknown."""
        rates = Rates.of(self.book, instance_type, self.region, storage_gb)
        if rates is None:
            raise PolicyViolation(
                f"No price is known for {instance_type} in {self.region}, so its cost cannot be checked against "
                f"BUDGET_USD. Add \"{instance_type}\": <USD per hour> to regions.{self.region}.instance_hourly "
                f"(with the region's gp3_gb_month and public_ipv4_hourly) in a copy of {self.book.path} and "
                "point PRICES_FILE at it.", code="price_unknown")
        return rates

    # -- the ledger -------------------------------------------------------------------------------
    def _refresh(self, now: datetime) -> None:
        """Bring the per-instance entries up to date: after a write, only the rows changed since the last
        look are read again (with their events), so a create's admission stays well under a millisecond."""
        generation = self.db.generation
        start, end = period_bounds(now)
        if generation == self._generation and start == self._period:
            return
        full = start != self._period  # a new period (or the first look): everything live or touched in it
        if full:
            self._entries.clear()
        rows, events = self.db.ledger(self.region, self.endpoint, start.strftime(TIME_FORMAT),
                                      None if full else self._rev)
        for row in rows:
            history = History.of(row, events.get(row["id"], []), self.book, start)
            cost = history.cost(start, end, now)
            self._entries[row["id"]] = (history, cost.spent_usd + cost.projected_usd)
            self._rev = max(self._rev, row["rev"])
        self._generation, self._period = generation, start

    def committed(self) -> float:
        """Spent plus every projection this period (as of each instance's last change)."""
        with self._lock:
            return self._committed()

    def _committed(self) -> float:
        self._refresh(clock.now())
        return sum(entry[1] for entry in self._entries.values())

    def summary(self, now: datetime | None = None) -> Summary:
        """Spent and committed this period, per instance, as of now."""
        now = now or clock.now()
        with self._lock:
            self._refresh(now)
            entries = list(self._entries.values())
        start, end = period_bounds(now)
        spent = committed = 0.0
        items: list[dict[str, Any]] = []
        unpriced: list[str] = []
        for history, _ in entries:
            row = history.row
            cost = history.cost(start, end, now)
            if not cost.priced:
                unpriced.append(row["id"])
            if cost.spent_usd == 0 and cost.projected_usd == 0:
                continue
            spent += cost.spent_usd
            committed += cost.spent_usd + cost.projected_usd
            items.append({"id": row["id"], "name": row["name"], "state": row["state"], "spent_usd": cost.spent_usd,
                          "projected_usd": cost.projected_usd, "stop_at": row["stop_at"]})
        items.sort(key=lambda item: str(item["id"]))
        return Summary(now, start, end, round(spent, 6), round(committed, 6), items, unpriced)

    def cost_of(self, row: InstanceRow) -> Cost:
        now = clock.now()
        start, end = period_bounds(now)
        return instance_cost(row, self.db.list_events(row["id"]), self.book, start, end, now)

    # -- admission ----------------------------------------------------------------------------------
    def admit(self, key: str | None, projection: float, what: str) -> None:
        """Reserve `projection` under `key` (None: only check) if it fits the budget, else 409 budget_exceeded."""
        with self._lock:  # read, check and reserve at once: two admissions never both take the last room
            if not self.shared:
                self._admit(key, projection, what, sum(self._reserved.values()))
                return
            # One admission at a time across replicas: the write lock, held while the ledger is read.
            with self.db.transaction(instances=False):
                self._admit(key, projection, what, self.db.reserved_usd(utcnow()))

    def _admit(self, key: str | None, projection: float, what: str, reserved: float) -> None:
        committed = self._committed()
        if committed + reserved + projection > self.budget_usd + 1e-9:
            raise Conflict(
                f"{what} would commit USD {projection:.4f} more this month; USD {committed + reserved:.4f} of "
                f"BUDGET_USD {self.budget_usd:.2f} is already committed (spent so far plus what running and "
                "stopped instances will cost until they stop or the month ends), leaving USD "
                f"{max(0.0, self.budget_usd - committed - reserved):.4f}. To make room: give it or others a "
                "shorter auto-stop (auto_stop_minutes, PATCH /instances/{id}), stop or delete an instance, "
                "or raise BUDGET_USD. GET /budget shows each instance's share.", code="budget_exceeded")
        if key is None:
            return
        if self.shared:
            until = (clock.now() + timedelta(seconds=self.reservation_seconds)).strftime(TIME_FORMAT)
            self.db.reserve(key, projection, until)
        self._reserved[key] = projection  # on PostgreSQL: which rows are this process's to release

    def release(self, key: str) -> None:
        """The reservation's record is written (the ledger counts it), or nothing was launched or started.
        On PostgreSQL a write: call it from a thread."""
        with self._lock:
            if self._reserved.pop(key, None) is None or not self.shared:
                return
            try:
                self.db.unreserve(key)
            except STORE_ERRORS as exc:  # the launch or start happened: never turn it into a failure
                log.warning("budget reservation %s not released (%s); it expires by itself", key, exc)


def parse_account_plan(doc: dict) -> dict:
    """`aws freetier get-account-plan-state` as GET /budget shows it."""
    credits = doc.get("accountPlanRemainingCredits") or {}
    amount = credits.get("amount")
    return {
        "plan_type": doc.get("accountPlanType"),
        "status": doc.get("accountPlanStatus"),
        "remaining_credits": float(amount) if isinstance(amount, int | float | str) and str(amount) else None,
        "credits_unit": credits.get("unit"),
        "expires_at": doc.get("accountPlanExpirationDate"),
    }


PLAN_REFRESH_SECONDS = 6 * 3600.0


class AccountPlan(LoopTask):
    """What AWS says of the account's free plan, fetched in the background and cached: GET /budget
    never waits for it. Only against real AWS: the local emulator has no freetier service."""

    name = "account-plan"

    def __init__(self, aws, emulated: bool) -> None:
        self.aws = aws
        self.plan: dict | None = None
        self.note = ("the local EC2 emulator does not implement the freetier service" if emulated else
                     "not fetched yet")
        self.emulated = emulated

    def cached(self) -> tuple[dict | None, str | None]:
        return self.plan, None if self.plan else self.note

    def start(self) -> None:
        if not self.emulated:
            super().start()

    async def _loop(self) -> None:
        while True:
            try:
                self.plan = parse_account_plan(await self.aws.run("get_account_plan_state.sh", background=True))
            except ApiError as exc:
                self.note = f"aws freetier get-account-plan-state failed: {exc.detail}"
                log.info("account plan not available: %s", exc.detail)
            await asyncio.sleep(PLAN_REFRESH_SECONDS)
