"""The spend guard's pure parts: the prices file, the period, one instance's ledger, admission, AWS's plan."""

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from app.budget.spending import (
    HORIZON,
    Charges,
    PriceBook,
    Rates,
    Spending,
    horizon,
    instance_cost,
    parse_account_plan,
    period_bounds,
    period_label,
)
from app.config import DEFAULT_PRICES_FILE, Settings
from app.core import clock
from app.core.errors import Conflict
from app.store import Database
from app.store.rows import InstanceState, LaunchStatus

BOOK = PriceBook.load(DEFAULT_PRICES_FILE)
T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def at(hours: float) -> str:
    return datetime.fromtimestamp(T0.timestamp() + hours * 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row(**fields) -> dict:
    base = {"id": "i-0123456789abcdef0", "name": "x", "instance_type": "t3.micro", "region": "us-east-1",
            "storage_gb": 10, "public_ip": None, "stop_at": None, "created_at": at(0),
            "state": InstanceState.RUNNING}
    return base | fields


def event(hours: float, state: str, ip: str | None = None) -> dict:
    return {"at": at(hours), "to_state": state, "public_ip": ip}


def test_the_shipped_prices_cover_the_default_types_in_us_east_1_with_sources():
    doc = json.loads(DEFAULT_PRICES_FILE.read_text())
    for name, region in doc["regions"].items():
        assert region["source"].startswith("https://aws.amazon.com/") and region["as_of"], name
    for instance_type in Settings.model_fields["allowed_instance_types"].default:
        assert BOOK.hourly(instance_type, "us-east-1") is not None
    assert BOOK.hourly("t3.micro", "us-east-1") == 0.0104 and BOOK.hourly("t3.micro", "mars-north-1") is None


@pytest.mark.parametrize("text, problem", [
    ("not json", "cannot be read"), ("{}", "regions"),
    ('{"regions": {"us-east-1": {"instance_hourly": {"t3.micro": -1}, "gp3_gb_month": 0.08, '
     '"public_ipv4_hourly": 0.005, "source": "s", "as_of": "d"}}}', "non-negative"),
    ('{"regions": {"us-east-1": {"instance_hourly": {}, "gp3_gb_month": 0.08}}}', "public_ipv4_hourly"),
])
def test_a_bad_prices_file_is_refused_at_start_naming_the_problem(tmp_path, text, problem):
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        PriceBook.load(path)
    with pytest.raises(ValueError, match="PRICES_FILE"):
        Settings(_env_file=None, prices_file=path)  # type: ignore[call-arg]


def test_the_period_is_the_calendar_month_in_utc():
    assert period_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert period_bounds(T0) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def test_spend_follows_the_state_history():
    start, end = period_bounds(T0)
    storage_hour = 10 * 0.08 / 730
    # 2 h running with an address, 3 h stopped, then running again (1 h so far) without one.
    history = [event(0, "pending", "203.0.113.1"), event(0, "running", "203.0.113.1"), event(2, "stopping"),
               event(2, "stopped"), event(5, "pending"), event(5, "running")]
    cost = instance_cost(row(), history, BOOK, start, end, datetime.fromisoformat(at(6)))
    expected = 2 * (0.0104 + 0.005) + 6 * storage_hour + 1 * 0.0104
    assert cost.spent_usd == pytest.approx(expected, abs=2e-6) and cost.priced
    # No stop_at: compute until the period end; storage too.
    left = (end - datetime.fromisoformat(at(6))).total_seconds() / 3600
    assert cost.projected_usd == pytest.approx(left * (0.0104 + storage_hour), abs=2e-6)


def test_the_projection_stops_at_stop_at_and_terminated_costs_nothing_more():
    start, end = period_bounds(T0)
    now = datetime.fromisoformat(at(1))
    running = row(stop_at=at(3), public_ip="203.0.113.1")
    cost = instance_cost(running, [event(0, "running", "203.0.113.1")], BOOK, start, end, now)
    storage_left = (end - now).total_seconds() / 3600 * 10 * 0.08 / 730
    assert cost.projected_usd == pytest.approx(2 * (0.0104 + 0.005) + storage_left, abs=2e-6)
    gone = row(state=InstanceState.TERMINATED)
    cost = instance_cost(gone, [event(0, "running"), event(1, "terminated")], BOOK, start, end,
                         datetime.fromisoformat(at(5)))
    assert cost.projected_usd == 0 and cost.spent_usd == pytest.approx(0.0104 + 10 * 0.08 / 730, abs=2e-6)


def test_history_before_the_period_only_counts_from_its_start():
    start, end = period_bounds(T0)
    old = row(created_at="2026-10-31T23:00:00.000000Z")
    cost = instance_cost(old, [{"at": "2026-10-31T23:00:00.000000Z", "to_state": "running", "public_ip": None}],
                         BOOK, start, end, datetime(2026, 11, 1, 2, tzinfo=UTC))
    assert cost.spent_usd == pytest.approx(2 * (0.0104 + 10 * 0.08 / 730), abs=2e-6)


def test_an_unpriced_type_still_counts_its_storage():
    start, end = period_bounds(T0)
    cost = instance_cost(row(instance_type="p5.48xlarge"), [event(0, "running")], BOOK, start, end,
                         datetime.fromisoformat(at(1)))
    assert not cost.priced and cost.spent_usd == pytest.approx(10 * 0.08 / 730, abs=2e-6)


def flat(usd: float) -> Charges:
    """A request that commits `usd` of compute this period and nothing later."""
    zero = (0.0,) * HORIZON
    return Charges((usd, *zero[1:]), zero, zero)


def test_admission_counts_reservations_and_says_how_to_make_room(tmp_path):
    db = Database(tmp_path / "i.db")
    db.migrate()
    spending = Spending(1.0, BOOK, db, "us-east-1", "")
    spending.admit("a", flat(0.6), "Creating this t3.micro")
    with pytest.raises(Conflict) as refused:
        spending.admit("b", flat(0.5), "Creating this t3.micro")  # 0.6 reserved + 0.5 > 1.0
    assert refused.value.code == "budget_exceeded"
    assert "BUDGET_USD" in refused.value.detail and "auto_stop_minutes" in refused.value.detail
    spending.release("a")
    spending.admit("b", flat(0.5), "Creating this t3.micro")
    spending.admit(None, flat(0.5), "check only")  # fits, reserves nothing
    with pytest.raises(Conflict):
        spending.admit(None, flat(0.51), "check only")


def test_the_account_plan_answer_is_parsed():
    recorded = {"accountId": "123456789012", "accountPlanType": "FREE", "accountPlanStatus": "ACTIVE",
                "accountPlanRemainingCredits": {"amount": 87.52, "unit": "USD"},
                "accountPlanExpirationDate": "2027-01-15T00:00:00Z"}
    assert parse_account_plan(recorded) == {"plan_type": "FREE", "status": "ACTIVE", "remaining_credits": 87.52,
                                            "credits_unit": "USD", "expires_at": "2027-01-15T00:00:00Z"}
    assert parse_account_plan({"accountPlanType": "PAID"})["remaining_credits"] is None


def test_without_events_the_instance_costs_what_its_record_says_since_it_was_created():
    start, end = period_bounds(T0)
    cost = instance_cost(row(), [], BOOK, start, end, datetime.fromisoformat(at(2)))
    assert cost.spent_usd == pytest.approx(2 * (0.0104 + 10 * 0.08 / 730), abs=2e-6)


def test_pruning_keeps_each_instances_newest_event(tmp_path):
    db = Database(tmp_path / "i.db")
    db.migrate()
    for i, when in enumerate(["2020-01-01T00:00:00.000000Z", "2020-01-02T00:00:00.000000Z"]):
        db.add_event("i-0123456789abcdef0", "observe", None, ["pending", "running"][i], "reconcile", at=when)
    db.add_event("i-00000000000000001", "create", None, "running", "api", at="2020-01-01T00:00:00.000000Z")
    assert db.prune("2021-01-01T00:00:00.000000Z")[0] == 1
    assert [e["to_state"] for e in db.list_events("i-0123456789abcdef0")] == ["running"]
    assert len(db.list_events("i-00000000000000001")) == 1


# -- every budget period a run spans (issue 24) ---------------------------------------------------------
NEW_YEARS_EVE = datetime(2026, 12, 31, 20, 0, tzinfo=UTC)


def test_a_run_is_charged_in_every_period_it_spans_and_no_stop_at_only_to_this_ones_end():
    rates = Rates.of(BOOK, "t3.micro", "us-east-1", 8)
    spans = horizon(NEW_YEARS_EVE)
    assert [period_label(s) for s, _ in spans[:4]] == ["2026-12", "2027-01", "2027-02", "2027-03"]
    run, disk = 0.0104 + 0.005, 8 * 0.08 / 730  # per hour: compute and IPv4; storage
    month = [31 * 24, 28 * 24, 31 * 24]  # hours of January, February, March
    week = rates.charges(NEW_YEARS_EVE, NEW_YEARS_EVE + timedelta(days=7), True, spans)
    assert week.totals[0] == pytest.approx(4 * (run + disk), abs=1e-6)
    assert week.parts(1)["compute_usd"] + week.parts(1)["public_ipv4_usd"] == pytest.approx((7 * 24 - 4) * run,
                                                                                          abs=2e-4)
    # The disk exists until the instance is deleted: it counts whole in every later month, stopped too.
    assert week.totals[1] == pytest.approx((7 * 24 - 4) * run + month[0] * disk, abs=1e-6)
    assert week.totals[2] == pytest.approx(month[1] * disk, abs=1e-6)
    forever = rates.charges(NEW_YEARS_EVE, None, True, spans)  # no stop_at: its run to December's end only
    assert forever.totals[0] == week.totals[0] and forever.totals[1] == pytest.approx(month[0] * disk, abs=1e-6)
    march = rates.charges(NEW_YEARS_EVE, datetime(2027, 4, 1, tzinfo=UTC), True, spans)
    for k in (1, 2, 3):
        assert march.totals[k] == pytest.approx(month[k - 1] * (run + disk), abs=1e-6)
    assert march.totals[4] == pytest.approx(30 * 24 * disk, abs=1e-6)  # April: the disk only
    assert march.parts(1)["storage_usd"] == pytest.approx(month[0] * disk, abs=1e-4)
    start = rates.charges(NEW_YEARS_EVE, None, True, spans, storage=False)  # a start: its disk is counted already
    assert sum(start.storage) == 0 and start.totals[0] == pytest.approx(4 * run, abs=1e-6)
    years = rates.charges(NEW_YEARS_EVE, datetime(2031, 1, 1, tzinfo=UTC), True, spans)
    assert len(years.totals) == HORIZON and min(years.compute[1:]) > 0  # the horizon covers what can bind


def _a_week_admitted_on_new_years_eve(tmp_path) -> tuple[Spending, Rates, list]:
    """The clock at New Year's Eve (the caller sets it back), BUDGET_USD 5, and a week's run admitted."""
    db = Database(tmp_path / "i.db")
    db.migrate()
    spending = Spending(5.0, BOOK, db, "us-east-1", "")
    rates = Rates.of(BOOK, "t3.micro", "us-east-1", 8)
    clock.start_at(NEW_YEARS_EVE)
    spans = horizon(clock.now())
    spending.admit("week", rates.charges(clock.now(), clock.now() + timedelta(days=7), True, spans), "A week")
    return spending, rates, spans


def test_admission_checks_each_period_against_its_budget(tmp_path):
    try:
        spending, rates, spans = _a_week_admitted_on_new_years_eve(tmp_path)
        # December has room; January holds the week's 2.7 and a month to March 31 would add 12 more.
        with pytest.raises(Conflict) as refused:
            spending.admit(None, rates.charges(clock.now(), datetime(2027, 3, 31, tzinfo=UTC), True, spans), "March")
        assert refused.value.extra["period"] == "2027-01"
        assert refused.value.extra["committed_usd"] == pytest.approx(3.18, abs=0.01)  # the week, its disk too
        spending.admit(None, rates.charges(clock.now(), None, True, spans), "No stop_at")  # December's end only
    finally:
        clock.start_at(None)


def test_a_later_month_already_full_refuses_only_what_adds_to_it(tmp_path):
    """January already holds more than its budget (a week's run and its disk, stopped disks count in full in
    every later month): a start whose run ends in December adds nothing there and is admitted; one that
    reaches into January is refused, naming it. (It was refused too, with "would commit USD 0.0000".)"""
    try:
        spending, rates, spans = _a_week_admitted_on_new_years_eve(tmp_path)
        spending.budget_usd = 3.0  # January holds ~3.18 now; December has room
        short = rates.charges(clock.now(), clock.now() + timedelta(hours=1), True, spans, storage=False)
        spending.admit(None, short, "A start for an hour")
        with pytest.raises(Conflict) as refused:
            spending.admit(None, rates.charges(clock.now(), clock.now() + timedelta(days=2), True, spans,
                                               storage=False), "A start for two days")
        assert refused.value.extra["period"] == "2027-01" and refused.value.extra["would_commit"]["total_usd"] > 0
    finally:
        clock.start_at(None)


def test_shutting_down_costs_nothing_more_from_now():
    start, end = period_bounds(T0)
    deleting = instance_cost(row(state=InstanceState.SHUTTING_DOWN), [event(0, "running"), event(1, "shutting-down")],
                             BOOK, start, end, datetime.fromisoformat(at(1)))
    assert deleting.projected_usd == 0 and deleting.spent_usd > 0


def test_an_unresolved_launch_holds_its_share_until_resolved(tmp_path):
    db = Database(tmp_path / "i.db")
    db.migrate()
    spending = Spending(100.0, BOOK, db, "us-east-1", "")
    body = {"request": {"instance_type": "t3.micro", "storage_gb": 8, "auto_stop_minutes": 60,
                        "associate_public_ip": True}}
    launch, _ = db.claim_launch("req-1", None, "h", body, "us-east-1", "")
    to_month_end = (period_bounds(clock.now())[1] - clock.now()).total_seconds() / 3600
    held = 0.0104 + 0.005 + 8 * 0.08 / 730 * to_month_end  # an hour of compute and IPv4, storage to the month's end
    assert spending.committed() == pytest.approx(held, abs=1e-3)
    spending.admit("req-1", flat(1.0), "being sent")  # while it is sent, its reservation counts instead
    assert spending.committed() == 0
    spending.release("req-1")  # the CLI timed out: the launch stays pending and holds its share
    assert spending.summary().launches[0]["request_id"] == "req-1"
    db.finish_launch("req-1", LaunchStatus.LOST, None, "never seen")
    assert spending.committed() == 0 and spending.summary().launches == []


def test_two_creates_claimed_at_once_with_room_for_one_admit_exactly_one(tmp_path):
    """A launch row is claimed and admitted as one step. Claimed apart, each create counted the other's pending
    row (not reserved yet) besides its own ask, and with room for one both were refused (issue 24's replicas
    test saw it). Here the first claim waits up to 2 s for the second before it is admitted: it must not come."""
    db = Database(tmp_path / "i.db")
    db.migrate()
    body = {"request": {"instance_type": "t3.micro", "storage_gb": 8, "auto_stop_minutes": 60,
                        "associate_public_ip": True}}
    now = clock.now()
    rates = Rates.of(BOOK, "t3.micro", "us-east-1", 8)
    assert rates is not None
    ask = rates.charges(now, now + timedelta(minutes=60), True, horizon(now))  # what each pending row holds too
    spending = Spending(1.5 * ask.totals[0], BOOK, db, "us-east-1", "")
    claimed = [threading.Event(), threading.Event()]
    outcomes: dict[int, str] = {}

    def create(n: int) -> None:
        def claim():
            launch = db.claim_launch(f"req-{n}", None, "h", body, "us-east-1", "")
            claimed[n].set()
            claimed[1 - n].wait(2)  # the other create's claim, if it could come before this admission
            return launch

        try:
            spending.admit_launch(claim, ask, f"create {n}")
            outcomes[n] = "admitted"
        except Conflict as exc:
            outcomes[n] = exc.code

    threads = [threading.Thread(target=create, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["admitted", "budget_exceeded"], outcomes


def _running(db: Database, instance_id: str, hours_ago: float, stop_at: str | None = None) -> None:
    at_ = (clock.now() - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    db.upsert_instance({"id": instance_id, "name": instance_id, "instance_type": "t3.micro", "region": "us-east-1",
                        "endpoint": "", "state": "running", "storage_gb": 8, "created_at": at_, "updated_at": at_,
                        "stop_at": stop_at, "auto_stop_minutes": None})
    db.add_event(instance_id, "create", None, "running", "api", at=at_)


def test_over_budget_picks_the_newest_runs_until_the_rest_fit(tmp_path):
    db = Database(tmp_path / "i.db")
    db.migrate()
    try:
        clock.start_at(datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC))
        for name, hours in (("i-00000000000000001", 0.001), ("i-00000000000000002", 0.0005),
                            ("i-00000000000000003", 0.0001)):
            _running(db, name, hours)
        month = 31 * 24 * (0.0104 + 8 * 0.08 / 730)
        spending = Spending(2.5 * month, BOOK, db, "us-east-1", "")
        committed, chosen = spending.over_budget()
        assert committed == pytest.approx(3 * month, rel=0.01)
        assert [r["id"] for r in chosen] == ["i-00000000000000003"]  # the newest run; the other two fit
        assert Spending(0.5 * month, BOOK, db, "us-east-1", "").over_budget()[1][-1]["id"] == "i-00000000000000001"
        assert Spending(4 * month, BOOK, db, "us-east-1", "").over_budget()[1] == []
    finally:
        clock.start_at(None)


def test_the_guard_stops_runs_never_admitted_for_this_period_first_then_the_newest(tmp_path):
    db = Database(tmp_path / "i.db")
    db.migrate()
    try:
        clock.start_at(datetime(2027, 2, 1, 0, 0, 5, tzinfo=UTC))
        # A and C run with auto-stop off since January (admitted to January's end only); B, a week from
        # 30 January (the newest run), was admitted for February too.
        _running(db, "i-0000000000000000a", 24 * 5)
        _running(db, "i-0000000000000000b", 24 * 2, stop_at="2027-02-06T00:00:00.000000Z")
        _running(db, "i-0000000000000000c", 24 * 3)
        month = 28 * 24 * (0.0104 + 8 * 0.08 / 730)
        spending = Spending(1.5 * month, BOOK, db, "us-east-1", "")
        assert spending.over_budget()[1][0]["id"] == "i-0000000000000000c"  # never admitted for February, newest
        chosen = [r["id"] for r in Spending(0.9 * month, BOOK, db, "us-east-1", "").over_budget()[1]]
        assert chosen == ["i-0000000000000000c", "i-0000000000000000a"]  # B, the newest run, was admitted
    finally:
        clock.start_at(None)


def test_another_accounts_records_are_not_counted_once_ours_is_known(tmp_path):
    db = Database(tmp_path / "i.db")
    db.migrate()
    _running(db, "i-00000000000000001", 1)
    db.update_instance("i-00000000000000001", {"account": "111111111111"})
    spending = Spending(100.0, BOOK, db, "us-east-1", "")
    counted = spending.committed()
    assert counted > 0  # our account is not known yet: counted
    spending.account = lambda: "222222222222"
    assert spending.committed() == 0 and spending.summary().instances == []
    spending.account = lambda: "111111111111"
    assert spending.committed() == pytest.approx(counted, abs=1e-4)


def test_charges_built_just_before_a_month_ended_are_admitted_by_their_months():
    rates = Rates.of(BOOK, "t3.micro", "us-east-1", 8)
    december = rates.charges(NEW_YEARS_EVE, NEW_YEARS_EVE + timedelta(days=7), True, horizon(NEW_YEARS_EVE))
    january = [period_label(s) for s, _ in horizon(datetime(2027, 1, 1, tzinfo=UTC))]
    assert december.by_period(january)[0] == december.totals[1]  # January's share compared with January
