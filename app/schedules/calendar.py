"""Office hours as a calendar: when a schedule starts and stops its instances (issue 27). Pure logic, no I/O.

A schedule has an IANA time zone, periods and holidays. A period is `days` (e.g. `mon-fri`, `sat,sun`, `mon#1`
the first Monday of the month, `friL` the last Friday), a `start` and/or a `stop` (`HH:MM`, local wall time); a
stop earlier than its start runs overnight (it stops on the next day; one equal to it, 24 hours later). A holiday
(`YYYY-MM-DD`) is off all day: nothing starts on it, and a period running into it is stopped at its first minute.

Wall times become instants through `zoneinfo`: a time that does not exist that day (the hour skipped when
daylight-saving time begins) runs at the first minute after the gap; a time that happens twice (the hour repeated
when it ends) runs at its first occurrence only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ITEM = re.compile(r"^(?P<day>[a-z]{3})(?:-(?P<to>[a-z]{3})|#(?P<nth>[1-5])|(?P<last>L))?$")
_HHMM = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$")
# Periods are compared over this many days for overlaps: every weekday falls on every position in a month
# (first..fifth, last) within it, so a longer span cannot find an overlap this one misses.
_OVERLAP_SPAN_DAYS = 400


class CalendarError(ValueError):
    """A schedule's field is wrong: `field` names it (as the API's 422 does), the message says what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class DayRule:
    """One item of a `days` expression: a weekday (0 = Monday), optionally only its nth (1-5) or last in a month."""

    weekday: int
    nth: int | None = None
    last: bool = False

    def matches(self, day: date) -> bool:
        if day.weekday() != self.weekday:
            return False
        if self.nth is not None:
            return (day.day - 1) // 7 + 1 == self.nth
        if self.last:
            return (day + timedelta(days=7)).month != day.month
        return True


def parse_days(expression: str, field: str = "days") -> tuple[DayRule, ...]:
    """`mon-fri`, `sat,sun`, `mon#1`, `friL`, `fri-mon` (a range may wrap the week), and lists of them."""
    allowed = ("a list of days separated by commas, each `mon`..`sun`, a range `mon-fri`, the nth weekday of "
               "the month `mon#1`..`mon#5`, or the last one `friL`")
    items = [item.strip() for item in expression.split(",")] if isinstance(expression, str) else []
    if not items or any(not item for item in items):
        raise CalendarError(field, f"{expression!r} is not a day expression: {allowed}")
    rules: list[DayRule] = []
    for item in items:
        found = _ITEM.match(item.lower() if item[-1:] != "L" else item[:-1].lower() + "L")
        if not found or found["day"] not in DAYS or (found["to"] and found["to"] not in DAYS):
            raise CalendarError(field, f"{item!r} in {expression!r} is not a day: {allowed}")
        first = DAYS.index(found["day"])
        if found["to"]:
            last = DAYS.index(found["to"])
            span = (last - first) % 7
            rules.extend(DayRule((first + i) % 7) for i in range(span + 1))
        else:
            rules.append(DayRule(first, int(found["nth"]) if found["nth"] else None, bool(found["last"])))
    return tuple(dict.fromkeys(rules))


def parse_hhmm(value: str | None, field: str) -> time | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _HHMM.match(value):
        raise CalendarError(field, f"{value!r} is not a time: HH:MM, 00:00 to 23:59")
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


@cache
def _zone_names() -> frozenset[str]:
    """The IANA zones zoneinfo knows (the system's files or the tzdata package), read once; not the system's
    own `localtime` or the placeholder `Factory`, which are no place's time."""
    return frozenset(available_timezones()) - {"localtime", "Factory", "posixrules"}


def parse_zone(name: str, field: str = "timezone") -> ZoneInfo:
    try:
        if not isinstance(name, str) or name not in _zone_names():  # not a folder (America), not `localtime`
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise CalendarError(field, f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin, "
                                   "America/New_York)") from exc


@dataclass(frozen=True)
class Period:
    days: tuple[DayRule, ...]
    start: time | None
    stop: time | None

    @property
    def overnight(self) -> bool:
        return self.start is not None and self.stop is not None and self.stop <= self.start

    def on(self, day: date) -> bool:
        return any(rule.matches(day) for rule in self.days)


@dataclass(frozen=True)
class Calendar:
    zone: ZoneInfo
    periods: tuple[Period, ...]
    holidays: frozenset[date]

    # -- the edges -------------------------------------------------------------------------------------------
    def edges(self, since: datetime, until: datetime) -> list[tuple[datetime, str]]:
        """Every (instant in UTC, "start" | "stop") with since < instant <= until, in order."""
        first = since.astimezone(self.zone).date() - timedelta(days=2)
        last = until.astimezone(self.zone).date() + timedelta(days=1)
        found = {(at, action) for day in _dates(first, last) for at, action in self._edges_of(day)
                 if since < at <= until}
        return sorted(found, key=lambda edge: (edge[0], edge[1] == "start"))

    def next_edge(self, after: datetime, action: str | None = None,
                  horizon_days: int = 62) -> tuple[datetime, str] | None:
        """The first edge after `after` (of `action`, when given), looked for up to horizon_days ahead."""
        edges = [e for e in self.edges(after, after + timedelta(days=horizon_days)) if action in (None, e[1])]
        return edges[0] if edges else None

    def next_stop(self, after: datetime, horizon_days: int = 62) -> datetime | None:
        """The first instant after `after` at which its instances stop: a stop edge with no start at the same
        instant (back-to-back periods, or a 24-hour one, run on through it)."""
        edges = self.edges(after, after + timedelta(days=horizon_days))
        starts = {at for at, action in edges if action == "start"}
        return next((at for at, action in edges if action == "stop" and at not in starts), None)

    def desired(self, at: datetime) -> str | None:
        """"running" or "stopped" by the last edge at or before `at` (looked for up to 62 days back), else None."""
        edges = self.edges(at - timedelta(days=62), at)
        return None if not edges else ("running" if edges[-1][1] == "start" else "stopped")

    def _edges_of(self, day: date) -> Iterator[tuple[datetime, str]]:
        """The edges of the periods that begin on `day` (an overnight stop lands on the next day)."""
        if day in self.holidays:
            yield to_instant(day, time(0, 0), self.zone), "stop"
            return
        for period in self.periods:
            if not period.on(day):
                continue
            if period.start is not None:
                yield to_instant(day, period.start, self.zone), "start"
            if period.stop is not None:
                stop_day = day + timedelta(days=1) if period.overnight else day
                yield to_instant(stop_day, period.stop, self.zone), "stop"


def build(timezone: str, periods: Iterable[dict], holidays: Iterable[str] = (),
          check_overlaps: bool = True) -> Calendar:
    """Validate a schedule's fields (CalendarError names the one that is wrong) and return its calendar
    (check_overlaps=False: a stored one, checked when it was written)."""
    zone = parse_zone(timezone)
    built: list[Period] = []
    for index, period in enumerate(periods):
        where = f"periods[{index}]"
        days = parse_days(period.get("days", ""), f"{where}.days")
        start = parse_hhmm(period.get("start"), f"{where}.start")
        stop = parse_hhmm(period.get("stop"), f"{where}.stop")
        if start is None and stop is None:
            raise CalendarError(where, "a period needs a start, a stop or both")
        built.append(Period(days, start, stop))
    if not built:
        raise CalendarError("periods", "a schedule needs at least one period")
    days_off: set[date] = set()
    for index, holiday in enumerate(holidays):
        try:
            days_off.add(date.fromisoformat(holiday) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", holiday) else _bad())
        except (TypeError, ValueError) as exc:
            raise CalendarError(f"holidays[{index}]", f"{holiday!r} is not a date: YYYY-MM-DD") from exc
    if check_overlaps:
        _refuse_overlaps(built)
    return Calendar(zone, tuple(built), frozenset(days_off))


def to_instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time: in a gap, the first minute after it; if repeated, the first one."""
    local = datetime.combine(day, wall, tzinfo=zone)  # fold=0: the first of a repeated time
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # A skipped time: the gap ends at the transition, which lies between the two readings of the wall time
    # (the offset before the gap, fold=0, and after it, fold=1). The first whole minute with the later offset.
    low = local.replace(fold=1).astimezone(UTC).replace(second=0, microsecond=0)
    before = low.astimezone(zone).utcoffset()
    minutes = int((instant - low) / timedelta(minutes=1))
    lo, hi = 0, max(minutes, 1)
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if (low + timedelta(minutes=middle)).astimezone(zone).utcoffset() == before:
            lo = middle
        else:
            hi = middle
    return low + timedelta(minutes=hi)


def _refuse_overlaps(periods: list[Period]) -> None:
    """Two periods may not run at the same minute of any day (compared over _OVERLAP_SPAN_DAYS days)."""
    def span(start: time, stop: time, day: date) -> tuple[int, int]:
        base = (day - REFERENCE).days * 1440
        return (base + start.hour * 60 + start.minute,
                base + stop.hour * 60 + stop.minute + (1440 if stop <= start else 0))

    running = sorted((*span(period.start, period.stop, day), index) for index, period in enumerate(periods)
                     if period.start is not None and period.stop is not None
                     for day in _dates(REFERENCE, REFERENCE + timedelta(days=_OVERLAP_SPAN_DAYS)) if period.on(day))
    latest, owner = -1, -1
    for start, stop, index in running:
        if start < latest and index != owner:
            first, second = sorted((owner, index))
            raise CalendarError(f"periods[{second}]", f"periods {first} and {second} overlap: a schedule's periods "
                                "may not run at the same time")
        if stop > latest:
            latest, owner = stop, index


REFERENCE = date(2024, 1, 1)


def _dates(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _bad() -> date:
    raise ValueError("not YYYY-MM-DD")
