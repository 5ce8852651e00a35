"""The budget, schedules and notifications pages. Like the rest of the dashboard they read what the API reads
(the spend ledger, the store's schedules and deliveries): a page view spawns no `aws` process.

- /ui/budget: spent / committed / remaining as a gauge, each instance's share (a user: theirs), spend per day this
  period (replayed from the ledger's state history, as the spend ledger prices it), and the AWS plan when known.
- /ui/schedules: each schedule's week (this week, Monday to Sunday, in its time zone) with the hours it runs, and
  the instances on it that the caller may see.
- /ui/notifications (admins): each delivery and its status (errors are redacted before they are stored)."""

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.api.deps import StoreDep
from app.auth.tokens import Caller
from app.budget.deps import AccountPlanDep, SpendingDep
from app.budget.spending import History, Spending
from app.core import clock
from app.core.clock import TIME_FORMAT, parse_time, period_bounds
from app.schedules.calendar import Calendar, to_instant
from app.store import Database
from app.store.rows import EventRow, InstanceRow
from app.ui.deps import SessionDep
from app.ui.router import render
from app.ui.views import Banner

router = APIRouter(include_in_schema=False)
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


# -- budget -----------------------------------------------------------------------------------------------------
def _segments(row: InstanceRow, events: Iterable[EventRow], history: History,
              now: datetime) -> list[tuple[datetime, datetime, float]]:
    """(from, until, USD per hour) of an instance's recorded states, as the spend ledger replays them
    (app/budget/spending.py History.of: an adopted instance ran from its creation; no history: as it is now;
    the last state at the rate its record holds now)."""
    timeline = [(at, e["to_state"], bool(e["public_ip"])) for e in events
                if e["to_state"] and (at := parse_time(e["at"])) is not None]
    born = parse_time(row["created_at"])
    if timeline and born and born < timeline[0][0]:
        timeline[0] = (born, *timeline[0][1:])
    if not timeline and born:
        timeline = [(born, row["state"], bool(row["public_ip"]))]
    rates = history.rates
    spans = [(at, until, rates.while_in(state, ip))
             for (at, state, ip), (until, _, _) in zip(timeline, timeline[1:], strict=False)]
    if timeline:
        spans.append((timeline[-1][0], now, rates.while_in(timeline[-1][1], bool(row["public_ip"]))))
    return spans


def spend_per_day(spending: Spending, db: Database, caller: Caller,
                  now: datetime | None = None) -> list[tuple[date, float]]:
    """USD spent on each day (UTC) of this period so far, over the instances the caller may see: the ledger's
    rows and events read once, each state's rate spread over the days it lasted."""
    now = now or clock.now()
    start, _ = period_bounds(now)
    rows, events = db.ledger(None, spending.endpoint, start.strftime(TIME_FORMAT))
    ours = spending.account()
    days = (now - start).days + 1
    totals = [0.0] * days
    for row in rows:
        if not caller.may_see(row["owner"]) or (ours and row["account"] and row["account"] != ours):
            continue
        mine = events.get(row["id"], [])
        history = History.of(row, mine, spending.book, start)
        for begin, until, rate in _segments(row, mine, history, now):
            begin, until = max(begin, start), min(until, now)
            if rate <= 0 or until <= begin:
                continue
            for k in range((begin - start).days, min(days, (until - start).days + 1)):
                day_start = start + timedelta(days=k)
                overlap = (min(until, day_start + timedelta(days=1)) - max(begin, day_start)).total_seconds()
                if overlap > 0:
                    totals[k] += rate * overlap / 3600
    return [((start + timedelta(days=k)).date(), round(total, 6)) for k, total in enumerate(totals)]


@dataclass(frozen=True)
class Gauge:
    """The stacked bar of spent, then projected (committed less spent), then what remains; widths in percent of
    the larger of the budget and what is committed."""

    banner: Banner

    @property
    def scale(self) -> float:
        return max(self.banner.budget_usd, self.banner.committed_usd) or 1.0

    @property
    def projected_usd(self) -> float:
        return max(0.0, self.banner.committed_usd - self.banner.spent_usd)

    def width(self, usd: float) -> float:
        """Its share of the bar; anything above nothing is at least half a percent, so that it shows."""
        return 0.0 if usd <= 0 else max(0.5, round(100 * usd / self.scale, 3))

    @property
    def over(self) -> bool:
        return self.banner.committed_usd > self.banner.budget_usd + 1e-9


def chart(days: list[tuple[date, float]], today: date, period_days: int) -> dict[str, Any]:
    """The per-day bars of the days so far, placed on the whole period's width: x, and a height in a 0-100 box
    (a day with any spend at least one unit high)."""
    top = max((usd for _, usd in days), default=0.0)
    bars = []
    for k, (day, usd) in enumerate(days):
        height = 0.0 if top <= 0 or usd <= 0 else max(1.0, round(90 * usd / top, 3))
        bars.append({"day": day.isoformat(), "label": day.strftime("%d"), "usd": usd, "x": k * 10, "height": height,
                     "today": day == today})
    return {"bars": bars, "max": top, "width": 10 * max(period_days, len(days), 1)}


def _budget_context(spending: Spending, store: Database, caller: Caller) -> dict[str, Any]:
    now = clock.now()
    summary = spending.summary(now)
    instances = summary.instances
    if not caller.is_admin:  # the totals are the account's; the shares are one's own (as GET /budget)
        rows = store.get_instances([i["id"] for i in instances])
        instances = [i for i in instances if i["id"] in rows and caller.may_see(rows[i["id"]]["owner"])]
    banner = Banner(spending.budget_usd, summary.spent_usd, summary.committed_usd)
    per_day = spend_per_day(spending, store, caller, now)
    return {"gauge": Gauge(banner), "banner": banner, "instances": instances,
            "period": (summary.period_start.date(), (summary.period_end - timedelta(days=1)).date()),
            "chart": chart(per_day, now.astimezone(UTC).date(), (summary.period_end - summary.period_start).days),
            "later": summary.later,
            "setting": spending.budget_setting}


@router.get("/ui/budget")
async def budget_page(request: Request, session: SessionDep, spending: SpendingDep, store: StoreDep,
                      account_plan: AccountPlanDep) -> HTMLResponse:
    """Spent, committed and remaining this period; each instance's share; spend per day; the AWS plan."""
    context = await asyncio.to_thread(_budget_context, spending, store, session.caller)
    plan, note = account_plan.cached()
    return render(request, "budget.html", session, plan=plan, plan_note=note, **context)


# -- schedules --------------------------------------------------------------------------------------------------
def running_spans(calendar: Calendar, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The spans of [start, end) in which the calendar wants its instances running."""
    up, since = calendar.desired(start) == "running", start
    spans = []
    for at, action in calendar.edges(start, end):
        if up and at > since:
            spans.append((since, at))
        up, since = action == "start", at
    if up and end > since:
        spans.append((since, end))
    return spans


def week(calendar: Calendar, now: datetime) -> dict[str, Any]:
    """This week (Monday to Sunday in the calendar's zone) as 7 rows of 24 hour cells, each with the share of its
    hour the schedule runs, and the whole week's running hours."""
    zone = calendar.zone
    today = now.astimezone(zone).date()
    monday = today - timedelta(days=today.weekday())
    edges = [to_instant(monday + timedelta(days=d), time(h), zone) for d in range(7) for h in range(24)]
    edges.append(to_instant(monday + timedelta(days=7), time(0), zone))
    spans = running_spans(calendar, edges[0], edges[-1])
    rows, total = [], 0.0
    for d in range(7):
        day = monday + timedelta(days=d)
        cells = []
        for h in range(24):
            begin, until = edges[d * 24 + h], edges[d * 24 + h + 1]
            length = (until - begin).total_seconds()
            on = sum(max(0.0, (min(b, until) - max(a, begin)).total_seconds()) for a, b in spans)
            share = on / length if length > 0 else 0.0
            total += on
            cells.append({"hour": h, "css": "on" if share >= 0.999 else "part" if share > 0 else "off",
                          "now": begin <= now < until})
        day_start, day_end = edges[d * 24], edges[d * 24 + 24]
        running = [f"{max(a, day_start).astimezone(zone):%H:%M}–"
                   f"{'24:00' if b >= day_end else format(b.astimezone(zone), '%H:%M')}"
                   for a, b in spans if a < day_end and b > day_start]
        rows.append({"name": DAY_NAMES[d], "key": DAY_NAMES[d].lower(), "date": day.isoformat(), "cells": cells,
                     "today": day == today, "holiday": day in calendar.holidays, "running": running})
    return {"rows": rows, "hours": round(total / 3600, 2), "monday": monday.isoformat()}


def _period_text(period: Mapping[str, Any]) -> str:
    return f"{period['days']} {period.get('start') or '…'}–{period.get('stop') or '…'}"


def _schedules_context(request: Request, store: Database, caller: Caller) -> dict[str, Any]:
    service = request.app.state.schedules
    now = clock.now()
    attached: dict[str, list[InstanceRow]] = {}
    for row in store.scheduled_instances():
        if row["schedule"] and caller.may_see(row["owner"]):
            attached.setdefault(row["schedule"], []).append(row)
    shown = []
    for stored in store.list_schedules():
        calendar, _ = service.calendars.of_row(stored)
        shown.append({"name": stored["name"], "timezone": stored["timezone"],
                      "periods": [_period_text(p) for p in stored["periods"]], "holidays": stored["holidays"],
                      "respect_manual_stop": stored["respect_manual_stop"], "week": week(calendar, now),
                      "instances": attached.get(stored["name"], [])})
    return {"schedules": shown}


@router.get("/ui/schedules")
async def schedules_page(request: Request, session: SessionDep, store: StoreDep) -> HTMLResponse:
    """Each schedule with a week view of when it runs, and its instances the caller may see."""
    context = await asyncio.to_thread(_schedules_context, request, store, session.caller)
    return render(request, "schedules.html", session, **context)


# -- notifications ----------------------------------------------------------------------------------------------
@router.get("/ui/notifications")
async def notifications_page(request: Request, session: SessionDep, store: StoreDep,
                             limit: Annotated[int, Query(ge=1, le=500)] = 100) -> HTMLResponse:
    """Recent deliveries, newest first (admins: they are about every person's instances)."""
    if not session.caller.is_admin:
        return render(request, "notifications.html", session, status_code=403, forbidden=True)
    notifier = request.app.state.notifier
    rows = await asyncio.to_thread(store.list_deliveries, limit)
    return render(request, "notifications.html", session, forbidden=False, deliveries=rows, limit=limit,
                  enabled=notifier.enabled, channels=[c.name for c in notifier.channels])
