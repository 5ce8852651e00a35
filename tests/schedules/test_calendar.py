"""The schedule calendar with fixed instants: days, overnight periods, holidays, daylight-saving gaps and repeats."""

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from app.schedules.calendar import CalendarError, DayRule, build, parse_days, to_instant

NY = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_day_expressions():
    assert parse_days("mon-fri") == tuple(DayRule(d) for d in range(5))
    assert parse_days("sat,sun") == (DayRule(5), DayRule(6))
    assert parse_days("fri-mon") == (DayRule(4), DayRule(5), DayRule(6), DayRule(0))  # a range wraps the week
    assert parse_days("mon#1") == (DayRule(0, nth=1),)
    assert parse_days("friL") == (DayRule(4, last=True),)
    assert parse_days("Mon, tue") == (DayRule(0), DayRule(1))


@pytest.mark.parametrize("bad", ["", "mon,", "funday", "mon#6", "mon#0", "mon-", "monL#1", "fril", "mon-xyz"])
def test_bad_day_expressions_name_the_field(bad):
    with pytest.raises(CalendarError) as refused:
        build("UTC", [{"days": bad, "start": "09:00", "stop": "18:00"}])
    assert refused.value.field == "periods[0].days"
    assert "mon-fri" in str(refused.value)  # says what is allowed


def test_nth_and_last_weekday_of_the_month():
    first_monday, last_friday = parse_days("mon#1")[0], parse_days("friL")[0]
    assert [d for d in range(1, 31) if first_monday.matches(date(2026, 6, d))] == [1]
    assert [d for d in range(1, 31) if last_friday.matches(date(2026, 4, d))] == [24]
    assert not last_friday.matches(date(2026, 4, 17))


def test_office_hours_edges_and_desired_state_in_the_schedules_zone():
    calendar = build("Europe/Berlin", [{"days": "mon-fri", "start": "09:00", "stop": "18:00"}])
    # Friday 2026-12-04 .. Monday 2026-12-07 in Berlin (UTC+1 in winter).
    assert calendar.edges(utc(2026, 12, 4, 0), utc(2026, 12, 7, 12)) == [
        (utc(2026, 12, 4, 8), "start"), (utc(2026, 12, 4, 17), "stop"), (utc(2026, 12, 7, 8), "start")]
    assert calendar.desired(utc(2026, 12, 5, 12)) == "stopped"  # Saturday
    assert calendar.desired(utc(2026, 12, 7, 8)) == "running"  # the start's own minute
    assert calendar.next_edge(utc(2026, 12, 4, 17)) == (utc(2026, 12, 7, 8), "start")


def test_an_overnight_period_stops_the_next_day_and_start_or_stop_only_periods():
    calendar = build("UTC", [{"days": "fri", "start": "22:00", "stop": "02:00"}, {"days": "sun", "stop": "20:00"}])
    assert calendar.edges(utc(2026, 12, 4), utc(2026, 12, 7)) == [
        (utc(2026, 12, 4, 22), "start"), (utc(2026, 12, 5, 2), "stop"), (utc(2026, 12, 6, 20), "stop")]


def test_a_holiday_is_off_all_day():
    calendar = build("UTC", [{"days": "mon-fri", "start": "09:00", "stop": "18:00"}], holidays=["2026-12-24"])
    edges = calendar.edges(utc(2026, 12, 23, 23), utc(2026, 12, 25, 23))
    assert edges == [(utc(2026, 12, 24), "stop"), (utc(2026, 12, 25, 9), "start"), (utc(2026, 12, 25, 18), "stop")]
    assert calendar.desired(utc(2026, 12, 24, 12)) == "stopped"


def test_a_time_skipped_by_daylight_saving_runs_at_the_first_minute_after_the_gap():
    # 2026-03-08 in New York: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 does not exist that day.
    assert to_instant(date(2026, 3, 8), time(2, 30), NY) == utc(2026, 3, 8, 7)
    assert to_instant(date(2026, 3, 8), time(3, 0), NY) == utc(2026, 3, 8, 7)
    assert to_instant(date(2026, 3, 9), time(2, 30), NY) == utc(2026, 3, 9, 6, 30)  # EDT the day after
    calendar = build("America/New_York", [{"days": "sun", "start": "02:30", "stop": "04:00"}])
    assert calendar.edges(utc(2026, 3, 8), utc(2026, 3, 9)) == [(utc(2026, 3, 8, 7), "start"),
                                                                 (utc(2026, 3, 8, 8), "stop")]


def test_a_repeated_time_runs_at_its_first_occurrence_only():
    # 2026-11-01 in New York: 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
    assert to_instant(date(2026, 11, 1), time(1, 30), NY) == utc(2026, 11, 1, 5, 30)
    calendar = build("America/New_York", [{"days": "sun", "start": "01:30", "stop": "03:00"}])
    assert calendar.edges(utc(2026, 11, 1), utc(2026, 11, 2)) == [(utc(2026, 11, 1, 5, 30), "start"),
                                                                  (utc(2026, 11, 1, 8), "stop")]


@pytest.mark.parametrize("periods, field", [
    ([{"days": "mon-fri", "start": "09:00", "stop": "18:00"}, {"days": "fri", "start": "17:00", "stop": "20:00"}],
     "periods[1]"),
    # an overnight period running into the next day's period
    ([{"days": "mon", "start": "22:00", "stop": "08:00"}, {"days": "tue", "start": "07:00", "stop": "09:00"}],
     "periods[1]"),
    # a first Monday that is also a Monday
    ([{"days": "mon#1", "start": "10:00", "stop": "11:00"}, {"days": "mon", "start": "08:00", "stop": "12:00"}],
     "periods[1]"),
])
def test_overlapping_periods_are_refused(periods, field):
    with pytest.raises(CalendarError) as refused:
        build("UTC", periods)
    assert refused.value.field == field and "overlap" in str(refused.value)


def test_periods_that_only_touch_do_not_overlap():
    build("UTC", [{"days": "mon-fri", "start": "09:00", "stop": "12:00"},
                  {"days": "mon-fri", "start": "12:00", "stop": "18:00"}])


@pytest.mark.parametrize("timezone, periods, holidays, field", [
    ("Mars/Olympus", [{"days": "mon", "start": "09:00"}], [], "timezone"),
    ("../etc/passwd", [{"days": "mon", "start": "09:00"}], [], "timezone"),
    ("America", [{"days": "mon", "start": "09:00"}], [], "timezone"),  # a folder of zones, not one
    ("localtime", [{"days": "mon", "start": "09:00"}], [], "timezone"),
    ("UTC", [{"days": "mon", "start": "9:00"}], [], "periods[0].start"),
    ("UTC", [{"days": "mon", "start": "09:00", "stop": "24:00"}], [], "periods[0].stop"),
    ("UTC", [{"days": "mon"}], [], "periods[0]"),
    ("UTC", [], [], "periods"),
    ("UTC", [{"days": "mon", "start": "09:00"}], ["2026-02-30"], "holidays[0]"),
    ("UTC", [{"days": "mon", "start": "09:00"}], ["2026-12-01", "12/24/2026"], "holidays[1]"),
])
def test_bad_fields_are_named(timezone, periods, holidays, field):
    with pytest.raises(CalendarError) as refused:
        build(timezone, periods, holidays)
    assert refused.value.field == field


def test_a_stop_equal_to_its_start_runs_24_hours():
    calendar = build("UTC", [{"days": "mon", "start": "09:00", "stop": "09:00"}])
    assert calendar.edges(utc(2026, 12, 7), utc(2026, 12, 9)) == [(utc(2026, 12, 7, 9), "start"),
                                                                  (utc(2026, 12, 8, 9), "stop")]
