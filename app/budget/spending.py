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
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.config import Settings
from app.core import clock
from app.core.clock import TIME_FORMAT, parse_time, period_bounds, utcnow
from app.core.errors import ApiError, Conflict, PolicyViolation
from app.core.loops import LoopTask
from app.store import STORE_ERRORS, Database
from app.store.rows import EventRow, InstanceRow, InstanceState, LaunchRow

log = logging.getLogger("ec2_creator.spending")

HOURS_PER_MONTH = 730.0
PRICES_CHECK_SECONDS = 5.0  # how often an admission looks whether PRICES_FILE changed (one stat)
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


def _hours(a: datetime, b: datetime) -> float:
    return max(0.0, (b - a).total_seconds() / 3600)


# A run is charged to every budget period it spans, each against that period's budget. The current period
# and the next twelve are enough: a run reaching past them covers every one of them whole, and among twelve
# months there is always one of 31 days, which no later month can cost more than.
HORIZON = 13


def horizon(now: datetime) -> list[tuple[datetime, datetime]]:
    """The budget periods from the one holding `now`: HORIZON (start, end) pairs."""
    spans = [period_bounds(now)]
    while len(spans) < HORIZON:
        spans.append(period_bounds(spans[-1][1]))
    return spans


def period_label(start: datetime) -> str:
    return start.strftime("%Y-%m")


@dataclass(frozen=True)
class Charges:
    """What a run commits in each budget period of the horizon, by what is charged."""

    compute: tuple[float, ...]
    ipv4: tuple[float, ...]
    storage: tuple[float, ...]
    periods: tuple[str, ...] = ()  # "YYYY-MM" of each; empty: those of the horizon at admission

    def by_period(self, labels: list[str]) -> list[float]:
        """The totals of the periods `labels` (one built just before a month ended: its first month is gone)."""
        if not self.periods:
            return self.totals
        mine = dict(zip(self.periods, self.totals, strict=True))
        return [mine.get(label, 0.0) for label in labels]

    def _combine(self, other: "Charges", op: Callable[[float, float], float]) -> "Charges":
        def each(mine: tuple[float, ...], theirs: tuple[float, ...]) -> tuple[float, ...]:
            return tuple(op(a, b) for a, b in zip(mine, theirs, strict=True))
        return Charges(each(self.compute, other.compute), each(self.ipv4, other.ipv4),
                       each(self.storage, other.storage), self.periods)

    def __add__(self, other: "Charges") -> "Charges":
        """Two requests' charges over the same periods."""
        return self._combine(other, lambda a, b: a + b)

    def __sub__(self, other: "Charges") -> "Charges":
        """What running longer adds (never below nothing in a period)."""
        return self._combine(other, lambda a, b: max(0.0, a - b))

    @property
    def totals(self) -> list[float]:
        return [c + i + s for c, i, s in zip(self.compute, self.ipv4, self.storage, strict=True)]

    def parts(self, k: int) -> dict[str, float]:
        """One period's share, split as a refusal shows it."""
        return {"compute_usd": round(self.compute[k], 4), "storage_usd": round(self.storage[k], 4),
                "public_ipv4_usd": round(self.ipv4[k], 4),
                "total_usd": round(self.compute[k] + self.storage[k] + self.ipv4[k], 4)}


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

    def charges(self, now: datetime, stop_at: datetime | None, has_ip: bool,
                spans: list[tuple[datetime, datetime]], running: bool = True, storage: bool = True) -> Charges:
        """From now, per budget period of `spans`: compute (and IPv4) while it runs, until stop_at (none: this
        period's end, then it is admitted again at each period's start); storage from now to this period's end
        and all through every later one, since the instance exists (stopped too) until it is deleted
        (`storage`: False when that is counted already, as for a start)."""
        compute, ipv4, disk = [0.0] * len(spans), [0.0] * len(spans), [0.0] * len(spans)
        for k, (start, finish) in enumerate(spans):
            begin = now if k == 0 else start
            if storage:
                disk[k] = self.storage * _hours(begin, finish)
            if running and (k == 0 or (stop_at is not None and stop_at > start)):
                hours = _hours(begin, min(max(stop_at, begin), finish) if stop_at else finish)
                compute[k], ipv4[k] = self.compute * hours, self.ipv4 * hours if has_ip else 0.0
        return Charges(tuple(compute), tuple(ipv4), tuple(disk), tuple(period_label(s) for s, _ in spans))

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
        projected = 0.0
        if self.costs_on:
            projected = self.rates.projection(now, self.stop_at, end, bool(self.row["public_ip"]),
                                              running=self.row["state"] in COMPUTE_STATES)
        return Cost(round(spent, 6), round(projected, 6), self.priced)

    @property
    def costs_on(self) -> bool:
        """Whether it costs anything from now: not once a delete is accepted (shutting-down), nor after."""
        return not (self.row["state"].ended or self.row["state"] == InstanceState.SHUTTING_DOWN)

    def commitments(self, spans: list[tuple[datetime, datetime]], now: datetime) -> list[float]:
        """Spent plus projected in the current period, then what its run commits in each later one."""
        cost = self.cost(spans[0][0], spans[0][1], now)
        later = [0.0] * (len(spans) - 1)
        if self.costs_on:  # its storage in every later period, and compute while its run reaches into one
            later = self.rates.charges(now, self.stop_at, bool(self.row["public_ip"]), spans,
                                       running=self.row["state"] in COMPUTE_STATES).totals[1:]
        return [cost.spent_usd + cost.projected_usd, *later]


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
    launches: list[dict] = field(default_factory=list)  # unresolved launches and what each holds
    later: list[dict] = field(default_factory=list)  # what runs commit to later periods


class Spending:
    """Prices, the ledger of this EC2 endpoint (every region of it: the budget is the account's) and admission
    against BUDGET_USD, in each budget period a run spans."""

    def __init__(self, budget_usd: float, book: PriceBook, db: Database, region: str, endpoint: str,
                 reservation_seconds: float = 600.0) -> None:
        self.budget_usd = budget_usd
        self.book = book
        self.db = db
        self.region = region
        self.endpoint = endpoint
        self._lock = threading.Lock()
        # id -> (its history, what it commits in each period of the horizon as of when it was last read);
        # re-read only when the row changes.
        self._entries: dict[str, tuple[History, list[float]]] = {}
        self._generation = -1
        self._period: datetime | None = None
        self._rev = 0  # the newest row revision read
        # Admitted creates and starts whose record is not written yet: key -> USD per period ("YYYY-MM").
        self._reserved: dict[str, dict[str, float]] = {}
        # Several replicas on one PostgreSQL database: the reservations live in the database, where every
        # replica's admission sees them; each expires after `reservation_seconds` (its replica may have died).
        self.shared = db.is_postgres
        self.reservation_seconds = reservation_seconds
        self._prices_stamp = _stamp(book.path)
        self._prices_checked = time.monotonic()
        # The account this server's credentials belong to, once known (set by the app): another account's
        # records (a profile switch) are neither swept nor stopped here, so they are not counted either.
        self.account: Callable[[], str | None] = lambda: None
        self.enforcement = "stop"  # BUDGET_ENFORCEMENT, as the guard (app/instances/budget_guard.py) applies it
        self.budget_setting = "BUDGET_USD"  # the setting the budget in force comes from (SANDBOX_BUDGET_USD)

    # -- prices -----------------------------------------------------------------------------------
    def reload_prices(self) -> bool:
        """Read PRICES_FILE again when it changed (True); a file gone bad is logged and the old prices kept."""
        stamp = _stamp(self.book.path)
        if stamp == self._prices_stamp:
            return False
        self._prices_stamp = stamp
        try:
            book = PriceBook.load(self.book.path)
        except ValueError as exc:
            log.error("prices not reloaded, the old ones stay in force: %s", exc)
            return False
        with self._lock:
            self.book = book
            self._generation, self._period = -1, None  # every entry is priced again
        log.info("PRICES_FILE %s changed: prices reloaded", book.path)
        return True

    def _reload_if_due(self) -> None:
        if time.monotonic() - self._prices_checked >= PRICES_CHECK_SECONDS:
            self._prices_checked = time.monotonic()
            self.reload_prices()

    # -- pricing a request ----------------------------------------------------------------------
    def rates_for(self, instance_type: str, storage_gb: int, region: str | None = None) -> Rates:
        """The rates of a new instance here, or 400 price_unknown."""
        region = region or self.region
        rates = Rates.of(self.book, instance_type, region, storage_gb)
        if rates is None:
            raise PolicyViolation(
                f"No price is known for {instance_type} in {region}, so its cost cannot be checked against "
                f"BUDGET_USD. Add \"{instance_type}\": <USD per hour> to regions.{region}.instance_hourly "
                f"(with the region's gp3_gb_month and public_ipv4_hourly) in a copy of {self.book.path} and "
                "point PRICES_FILE at it.", code="price_unknown")
        return rates

    # -- the ledger -------------------------------------------------------------------------------
    def _refresh(self, now: datetime) -> list[tuple[datetime, datetime]]:
        """Bring the per-instance entries up to date: after a write, only the rows changed since the last
        look are read again (with their events), so a create's admission stays well under a millisecond."""
        spans = horizon(now)
        generation = self.db.generation
        start = spans[0][0]
        if generation == self._generation and start == self._period:
            return spans
        full = start != self._period  # a new period (or the first look): everything live or touched in it
        if full:
            self._entries.clear()
        # The budget is the account's: every region of this endpoint counts (None), not just self.region.
        rows, events = self.db.ledger(None, self.endpoint, start.strftime(TIME_FORMAT),
                                      None if full else self._rev)
        for row in rows:
            history = History.of(row, events.get(row["id"], []), self.book, start)
            self._entries[row["id"]] = (history, history.commitments(spans, now))
            self._rev = max(self._rev, row["rev"])
        self._generation, self._period = generation, start
        return spans

    def _launches(self, spans: list[tuple[datetime, datetime]], now: datetime,
                  reserved: set[str]) -> list[tuple[LaunchRow, Charges]]:
        """Launches whose outcome is not known yet (the CLI timed out, the server died mid-call): each holds
        what it was admitted for until it is resolved, launched, lost or refused. Those still reserved (being
        sent right now) are counted by their reservation."""
        held = []
        for launch in self.db.unresolved_launches(self.endpoint):
            if launch["request_id"] in reserved:
                continue
            try:
                request = json.loads(launch["body"]).get("request") or {}
            except ValueError:
                continue
            rates = Rates.of(self.book, request.get("instance_type"), launch["region"] or self.region,
                             request.get("storage_gb"))
            created = parse_time(launch["created_at"]) or now
            if rates is None:
                continue
            minutes = request.get("auto_stop_minutes")
            stop_at = created + timedelta(minutes=minutes) if minutes else None
            since = min(max(created, spans[0][0]), now)  # if it launched, it has run since it was sent
            held.append((launch, rates.charges(since, stop_at, bool(request.get("associate_public_ip", True)),
                                               spans)))
        return held

    def _commitments(self, now: datetime, reserved: set[str]) -> tuple[list[tuple[datetime, datetime]], list[float]]:
        """Per period of the horizon: spent plus every projection, and what unresolved launches hold."""
        spans = self._refresh(now)
        totals = [0.0] * len(spans)
        for history, amounts in self._entries.values():
            if self._mine(history.row):
                totals = [a + b for a, b in zip(totals, amounts, strict=True)]
        for _, charges in self._launches(spans, now, reserved):
            totals = [a + b for a, b in zip(totals, charges.totals, strict=True)]
        return spans, totals

    def _mine(self, row: InstanceRow) -> bool:
        """Not another account's (once ours is known)."""
        ours = self.account()
        return not (ours and row["account"] and row["account"] != ours)

    def committed(self) -> float:
        """Spent plus every projection this period (as of each instance's last change)."""
        with self._lock:
            return self._commitments(clock.now(), set(self._reserved))[1][0]

    def summary(self, now: datetime | None = None) -> Summary:
        """Spent and committed this period, per instance, as of now; and what is committed to later periods."""
        now = now or clock.now()
        with self._lock:
            spans = self._refresh(now)
            entries = [entry for entry in self._entries.values() if self._mine(entry[0].row)]
            launches = self._launches(spans, now, set(self._reserved))
        start, end = spans[0]
        spent = committed = 0.0
        ahead = [0.0] * len(spans)
        items: list[dict[str, Any]] = []
        unpriced: list[str] = []
        for history, amounts in entries:
            row = history.row
            cost = history.cost(start, end, now)
            ahead = [a + b for a, b in zip(ahead, amounts, strict=True)]
            if not cost.priced:
                unpriced.append(row["id"])
            if cost.spent_usd == 0 and cost.projected_usd == 0:
                continue
            spent += cost.spent_usd
            committed += cost.spent_usd + cost.projected_usd
            items.append({"id": row["id"], "name": row["name"], "state": row["state"], "spent_usd": cost.spent_usd,
                          "projected_usd": cost.projected_usd, "stop_at": row["stop_at"]})
        items.sort(key=lambda item: str(item["id"]))
        held = []
        for launch, charges in launches:
            committed += charges.totals[0]
            ahead = [a + b for a, b in zip(ahead, charges.totals, strict=True)]
            held.append({"request_id": launch["request_id"], "since": launch["created_at"], "owner": launch["owner"],
                         "projected_usd": round(charges.totals[0], 6)})
        later = [{"period_start": s.strftime(TIME_FORMAT), "committed_usd": round(amount, 4)}
                 for (s, _), amount in zip(spans[1:], ahead[1:], strict=True) if amount > 0]
        return Summary(now, start, end, round(spent, 6), round(committed, 6), items, unpriced, held, later)

    def cost_of(self, row: InstanceRow) -> Cost:
        now = clock.now()
        start, end = period_bounds(now)
        return instance_cost(row, self.db.list_events(row["id"]), self.book, start, end, now)

    # -- admission ----------------------------------------------------------------------------------
    def admit(self, key: str | None, charges: Charges, what: str) -> None:
        """Reserve `charges` under `key` (None: only check) if they fit the budget of every period they reach,
        else 409 budget_exceeded."""
        self._reload_if_due()  # every replica prices with the file in force, not only the leader's guard
        with self._lock:  # read, check and reserve at once: two admissions never both take the last room
            if not self.shared:
                self._admit(key, charges, what, self._reserved)
                return
            # One admission at a time across replicas: the write lock, held while the ledger is read.
            with self.db.transaction(instances=False):
                self._admit(key, charges, what, self.db.reservations(utcnow()))

    def admit_launch(self, claim: Callable[[], tuple[Any, bool]], charges: Charges, what: str) -> tuple[Any, bool]:
        """Claim a create's launch row (`claim`: (launch, claimed)) and admit its charges under its request id,
        as one step: no other admission sees the row before it is admitted. Seen between the two, a pending
        launch row that is not reserved counts as held, so two creates claimed at once each counted the
        other's row and their own ask, and with room for one both were refused. A launch not claimed (an
        Idempotency-Key already holding one) is not admitted. On PostgreSQL a refusal rolls the claim back."""
        self._reload_if_due()
        with self._lock:  # in this process: no admission and no ledger read between the claim and its admission
            if not self.shared:
                launch, claimed = claim()
                if claimed:
                    self._admit(launch["request_id"], charges, what, self._reserved)
                return launch, claimed
            # Across replicas: the claim is visible to the others only with its reservation (one transaction).
            with self.db.transaction(instances=False):
                launch, claimed = claim()
                if claimed:
                    self._admit(launch["request_id"], charges, what, self.db.reservations(utcnow()))
                return launch, claimed

    def _admit(self, key: str | None, charges: Charges, what: str, reserved: dict[str, dict[str, float]]) -> None:
        now = clock.now()
        # A create's launch row is written before it is admitted: its own charges are the ones asked here.
        spans, committed = self._commitments(now, set(reserved) | ({key} if key else set()))
        asked = charges.by_period([period_label(start) for start, _ in spans])
        for k, (start, _) in enumerate(spans):
            if k > 0 and asked[k] <= 0:  # adds nothing to that later month: cannot push it over (the guard
                continue                 # readmits what that month already holds when it comes)
            label = period_label(start)
            held = committed[k] + _reserved_in(reserved, label, k)
            if held + asked[k] > self.budget_usd + 1e-9:
                raise self._refusal(what, charges, k, label, held)
        if key is None:
            return
        amounts = {period_label(start): amount for k, ((start, _), amount) in enumerate(zip(spans, asked, strict=True))
                   if amount > 0 or k == 0}
        if self.shared:
            until = (clock.now() + timedelta(seconds=self.reservation_seconds)).strftime(TIME_FORMAT)
            self.db.reserve(key, amounts, until)
        self._reserved[key] = amounts  # on PostgreSQL: which rows are this process's to release

    def _refusal(self, what: str, charges: Charges, k: int, label: str, held: float) -> Conflict:
        parts = charges.parts(k)
        left = max(0.0, self.budget_usd - held)
        when = "this month" if k == 0 else f"in {label} (its run reaches into that month)"
        split = (f"compute USD {parts['compute_usd']:.4f}, storage USD {parts['storage_usd']:.4f}, public IPv4 "
                 f"USD {parts['public_ipv4_usd']:.4f}")
        return Conflict(
            f"{what} would commit USD {parts['total_usd']:.4f} {when} ({split}); USD {held:.4f} of that month's "
            f"{self.budget_setting} {self.budget_usd:.2f} is already committed (spent so far plus what running "
            "and stopped instances will cost until they stop or the month ends), leaving USD "
            f"{left:.4f}. A shorter auto-stop (auto_stop_minutes) lowers compute and IPv4; storage is counted "
            "to the month's end while the instance exists, stopped too (a smaller storage_gb lowers it); "
            "associate_public_ip false removes IPv4. Or make room: stop or delete an instance (PATCH "
            f"/instances/{{id}} for a shorter auto-stop), or raise {self.budget_setting}. GET /budget shows each "
            "instance's share.", code="budget_exceeded",
            extra={"period": label, "would_commit": parts, "committed_usd": round(held, 4),
                   "left_usd": round(left, 4), "budget_usd": self.budget_usd})

    def release(self, key: str) -> None:
        """The reservation's record is written (the ledger counts it), or nothing was launched or started,
        or the launch's outcome is unknown (its pending launch holds the amount from now on).
        On PostgreSQL a write: call it from a thread."""
        with self._lock:
            if self._reserved.pop(key, None) is None or not self.shared:
                return
            try:
                self.db.unreserve(key)
            except STORE_ERRORS as exc:  # the launch or start happened: never turn it into a failure
                log.warning("budget reservation %s not released (%s); it expires by itself", key, exc)

    # -- enforcement ----------------------------------------------------------------------------------
    def over_budget(self, now: datetime | None = None) -> tuple[float, list[InstanceRow]]:
        """This period's committed spend, and, when it passes BUDGET_USD, the running instances to stop so that
        it fits again, each saving what it would still cost this period: first the runs never admitted for this
        period (started before it with no stop_at: charged to the last period's end), then the others; the
        newest first in each. Reservations (admissions being sent) are left out: they were admitted, and a
        record written just before its reservation is released must not count twice."""
        now = now or clock.now()
        with self._lock:
            reserved = self._reserved if not self.shared else self.db.reservations(utcnow())
            spans, committed = self._commitments(now, set(reserved))
            entries = [history for history, _ in self._entries.values() if self._mine(history.row)]
        total = committed[0]
        if total <= self.budget_usd + 1e-9:
            return total, []
        start, end = spans[0]
        oldest = datetime.min.replace(tzinfo=UTC)

        def order(history: History) -> tuple[bool, datetime, str]:
            readmitted = (history.since or oldest) < start and history.stop_at is None
            return readmitted, history.since or oldest, history.row["id"]

        running = sorted((h for h in entries if h.row["state"] == InstanceState.RUNNING), key=order, reverse=True)
        excess, chosen = total - self.budget_usd, []
        for history in running:
            if excess <= 1e-9:
                break
            chosen.append(history.row)
            excess -= history.rates.projection(now, history.stop_at, end, bool(history.row["public_ip"]),
                                               storage=False)
        return total, chosen


def _reserved_in(reserved: dict[str, dict[str, float]], label: str, k: int) -> float:
    """What the reservations hold in period `label` (the k-th of the horizon); a row of an older version,
    with no period, counts in the current one."""
    return sum(amounts.get(label, 0.0) + (amounts.get("", 0.0) if k == 0 else 0.0) for amounts in reserved.values())


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


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


def settings_problems(settings: Settings) -> list[tuple[tuple[str, ...], str]]:
    """PRICES_FILE read and checked as the budget will read it (the message says what is wrong in it)."""
    try:
        PriceBook.load(settings.prices_file)
    except ValueError as exc:
        return [(("PRICES_FILE",), str(exc))]
    return []
