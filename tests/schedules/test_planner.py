"""When a scheduled run stops, which starts are due, and how many hours a schedule runs: with a real store (the
planner reads the schedules table) and fixed instants. Monday 2026-12-07, office hours 09:00-17:00 UTC."""

from datetime import UTC, datetime, timedelta

import pytest

from app.instances.plan import AutoStopOnly
from app.schedules.calendar import build
from app.schedules.planner import SchedulePlanner
from app.schedules.scheduler import _due_start
from app.schedules.service import running_hours
from app.store import Database

OFFICE = [{"days": "mon-fri", "start": "09:00", "stop": "17:00"}]


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def planner(tmp_path) -> SchedulePlanner:
    db = Database(tmp_path / "plan.db")
    db.migrate()
    db.put_schedule("office", "UTC", OFFICE, ["2026-12-08"], True, create=True)
    yield SchedulePlanner(db)
    db.dispose()


def row(**fields) -> dict:
    return {"schedule": "office", "auto_stop_minutes": 480, "auto_stop_default": 1, "stop_at": None,
            "stop_source": None} | fields


def test_inside_its_hours_the_default_auto_stop_gives_way_to_the_schedules_stop(planner):
    assert planner.plan(row(), utc(7, 9), True) == ("2026-12-07T17:00:00.000000Z", "schedule")


def test_an_auto_stop_asked_for_applies_on_top_whichever_comes_first(planner):
    assert planner.plan(row(auto_stop_default=0, auto_stop_minutes=60), utc(7, 9), True) == \
        ("2026-12-07T10:00:00.000000Z", "auto_stop")
    assert planner.plan(row(auto_stop_default=None, auto_stop_minutes=600), utc(7, 9), True) == \
        ("2026-12-07T17:00:00.000000Z", "schedule")  # not known whether asked for: counted as asked for


def test_started_by_hand_outside_its_hours_the_default_auto_stop_ends_that_run(planner):
    # 22:00 Wednesday: the next scheduled stop is Thursday 17:00; the default auto-stop (06:00) comes first.
    assert planner.plan(row(), utc(9, 22), True) == ("2026-12-10T06:00:00.000000Z", "auto_stop")
    # Without any auto-stop, the schedule's next stop is the one.
    assert planner.plan(row(auto_stop_minutes=None), utc(9, 22), True) == ("2026-12-10T17:00:00.000000Z", "schedule")
    # Monday 22:00: Tuesday is a holiday, which stops what runs at its first minute.
    assert planner.plan(row(), utc(7, 22), True) == ("2026-12-08T00:00:00.000000Z", "schedule")


def test_an_unknown_schedule_leaves_the_auto_stop_alone(planner):
    assert planner.plan(row(schedule="ghost"), utc(7, 9), True) == ("2026-12-07T17:00:00.000000Z", "auto_stop")
    assert planner.plan(row(schedule=None), utc(7, 9), True) == AutoStopOnly().plan(row(), utc(7, 9), True)


def test_attaching_to_a_running_one_keeps_the_auto_stop_it_runs_under(planner):
    running = row(auto_stop_default=0, stop_at="2026-12-07T12:00:00.000000Z", stop_source="auto_stop")
    assert planner.plan(running, utc(7, 10), False) == ("2026-12-07T12:00:00.000000Z", "auto_stop")
    late = row(auto_stop_default=0, stop_at="2026-12-07T20:00:00.000000Z", stop_source="auto_stop")
    assert planner.plan(late, utc(7, 10), False) == ("2026-12-07T17:00:00.000000Z", "schedule")


def test_a_default_auto_stop_that_would_end_inside_its_hours_gives_way(planner):
    # Started by hand at 06:00: the default (480 min) would stop it at 14:00 and no start comes after that
    # until tomorrow; the schedule's stop (17:00) ends the run instead.
    assert planner.plan(row(), utc(7, 6), True) == ("2026-12-07T17:00:00.000000Z", "schedule")


def test_back_to_back_periods_and_a_24_hour_one_run_on_through_their_shared_minute(planner):
    planner.db.put_schedule("split", "UTC", [{"days": "mon-fri", "start": "09:00", "stop": "12:00"},
                                             {"days": "mon-fri", "start": "12:00", "stop": "18:00"}], [], True,
                            create=True)
    planner.db.put_schedule("day", "UTC", [{"days": "mon", "start": "09:00", "stop": "09:00"}], [], True, create=True)
    assert planner.plan(row(schedule="split"), utc(7, 10), True) == ("2026-12-07T18:00:00.000000Z", "schedule")
    assert planner.plan(row(schedule="day"), utc(7, 10), True) == ("2026-12-08T09:00:00.000000Z", "schedule")


def test_a_snooze_into_a_later_period_lasts_to_that_periods_stop(planner):
    assert planner.snoozed(row(), utc(7, 17), utc(7, 18)) == utc(7, 18)  # after hours: where it was pushed to
    assert planner.snoozed(row(), utc(7, 12), utc(7, 13)) == utc(7, 13)  # the same period: where it was pushed to
    # From Monday 17:00 into Wednesday's hours (Tuesday is a holiday): a stop there would leave it off that day.
    assert planner.snoozed(row(), utc(7, 17), utc(9, 10)) == utc(9, 17)
    assert planner.snoozed(row(schedule=None), utc(7, 17), utc(9, 10)) == utc(9, 10)


def test_exists_reads_the_store(planner):
    assert planner.exists("office") and not planner.exists("ghost")


def test_a_changed_schedule_is_built_again(planner):
    planner.db.put_schedule("office", "UTC", [{"days": "mon-fri", "start": "09:00", "stop": "12:00"}], [], True,
                            create=False)
    assert planner.plan(row(), utc(7, 9), True) == ("2026-12-07T12:00:00.000000Z", "schedule")


CALENDAR = build("UTC", OFFICE)


def test_a_start_is_due_when_its_edge_passed_since_the_last_check():
    assert _due_start(CALENDAR, True, utc(7, 8, 59), utc(7, 9, 0)) == utc(7, 9)
    assert _due_start(CALENDAR, True, utc(7, 9, 0), utc(7, 9, 1)) is None  # acted on already


def test_after_downtime_a_start_is_done_only_while_its_period_still_runs():
    assert _due_start(CALENDAR, True, utc(7, 7), utc(7, 12)) == utc(7, 9)  # down 07:00-12:00: still office hours
    assert _due_start(CALENDAR, True, utc(7, 7), utc(7, 18)) is None  # down past 17:00: that day is over


def test_a_manual_stop_is_respected_unless_the_schedule_says_otherwise():
    assert _due_start(CALENDAR, True, utc(7, 11), utc(7, 11, 1)) is None
    assert _due_start(CALENDAR, False, utc(7, 11), utc(7, 11, 1)) == utc(7, 9)
    assert _due_start(CALENDAR, False, utc(7, 18), utc(7, 18, 1)) is None  # outside its hours: stays stopped


def test_only_a_persons_stop_is_undone_when_manual_stops_are_not_respected(planner, tmp_path):
    from app.config import Settings
    from app.instances.service import InstanceService
    from app.schedules.scheduler import Scheduler

    db = planner.db
    scheduler = Scheduler(Settings(_env_file=None), db, None, InstanceService(Settings(_env_file=None), db, None),  # type: ignore[call-arg, arg-type]
                          planner.calendars)
    for source, idle, by_hand in (("api", None, True), ("reconcile", None, True), ("auto_stop", None, False),
                                  ("schedule", None, False), ("budget_enforced", None, False),
                                  ("reconcile", {"cpu_below_percent": 5, "for_minutes": 60}, False)):
        instance_id = f"i-{len(source):08x}{int(by_hand):09x}"
        db.upsert_instance({"id": instance_id, "name": "x", "state": "stopped", "stop_when_idle": idle,
                            "created_at": "t", "updated_at": "t"})
        db.add_event(instance_id, "stop", "running", "stopping", source)
        assert scheduler._stopped_by_hand(db.get_instance(instance_id)) is by_hand, (source, idle)


def test_running_hours_over_a_window():
    assert running_hours(CALENDAR, utc(7, 0), utc(7, 0) + timedelta(days=7)) == 40  # five 8-hour days
    assert running_hours(CALENDAR, utc(7, 12), utc(7, 18)) == 5  # from its state at the window's start
    holidays = build("UTC", OFFICE, ["2026-12-08"])
    assert running_hours(holidays, utc(7, 0), utc(7, 0) + timedelta(days=7)) == 32
