"""The auto-stopper's decisions and the recorder's part in them, in process: a real SQLite store, a real
Recorder; only EC2's answers to stop-instances are scripted (the real thing: tests/test_auto_stop.py)."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from app.config import Settings
from app.core import clock
from app.core.clock import TIME_FORMAT
from app.core.errors import ApiError
from app.instances.auto_stop import CHECK_SECONDS, AutoStopper
from app.instances.reconciler import Reconciler
from app.instances.recorder import Recorder
from app.store import Database

ACCOUNT = "123456789012"
MANAGED = [{"Key": "ManagedBy", "Value": "ec2-creator-local"}]


class StopAnswers:
    """stop-instances as EC2 answers it: `refuse` ids get IncorrectInstanceState, `stuck` ids stay running."""

    def __init__(self, refuse: set[str] = frozenset(), stuck: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.refuse, self.stuck, self.calls = refuse, stuck, []

    async def run(self, script: str, *ids: str, region=None, background=False) -> dict:
        assert script == "stop_instance.sh"
        self.calls.append(list(ids))
        refused = [i for i in ids if i in self.refuse]
        if refused:
            raise ApiError(f"This instance '{refused[0]}' is not in a state from which it can be stopped.",
                           aws_error_code="IncorrectInstanceState")
        return {"StoppingInstances": [{"InstanceId": i, "CurrentState": {
            "Name": "running" if i in self.stuck else "stopping"}} for i in ids]}


def at(seconds: float) -> str:
    return (clock.now() + timedelta(seconds=seconds)).strftime(TIME_FORMAT)


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def recorder(tmp_path, settings) -> Recorder:
    db = Database(tmp_path / "x.db")
    db.migrate()
    recorder = Recorder(settings, db, lambda ami: "ec2-user")
    recorder.account = ACCOUNT
    return recorder


def stopper(recorder: Recorder, aws=None) -> AutoStopper:
    aws = aws or StopAnswers()
    return AutoStopper(recorder.db, aws, recorder, Reconciler(recorder.settings, recorder.db, aws, recorder))


def put(recorder: Recorder, instance_id: str, stop_at: str, state: str = "running", **fields) -> None:
    recorder.db.upsert_instance({"id": instance_id, "name": instance_id, "ami": "ami-0123456789abcdef0",
                                 "instance_type": "t3.micro", "state": state, "backend_used": "awscli",
                                 "stop_at": stop_at, "auto_stop_minutes": 1, **recorder.scope,
                                 "created_at": at(-120), "updated_at": at(-120), **fields})


def test_one_that_fell_due_during_a_round_is_stopped_in_the_next_not_a_minute_later(recorder):
    """Four one-minute instances created within a second: the round that stops the first finds the others
    due when it ends. EC2 did not refuse them: the next round is now (it used to sleep CHECK_SECONDS)."""
    auto = stopper(recorder)
    put(recorder, "i-00000000000000001", at(-0.01))
    assert asyncio.run(auto.run_due()) == ["i-00000000000000001"]
    put(recorder, "i-00000000000000002", at(-0.5))  # fell due while the first stop was in flight
    put(recorder, "i-00000000000000003", at(-0.2))
    assert asyncio.run(auto._delay()) == 0
    assert sorted(asyncio.run(auto.run_due())) == ["i-00000000000000002", "i-00000000000000003"]
    put(recorder, "i-00000000000000004", at(5))
    assert 4 < asyncio.run(auto._delay()) <= 5.1  # until the next stop_at


def test_one_ec2_refused_waits_a_minute_without_delaying_the_others(recorder):
    refused = "i-0000000000000000a"
    aws = StopAnswers(refuse={refused})
    auto = stopper(recorder, aws)
    put(recorder, refused, at(-1))
    assert asyncio.run(auto.run_due()) == []
    assert CHECK_SECONDS - 1 < asyncio.run(auto._delay()) <= CHECK_SECONDS  # no busy loop on it
    assert asyncio.run(auto.run_due()) == [] and aws.calls == [[refused]]  # nor another call
    put(recorder, "i-0000000000000000b", at(3))
    assert 2 < asyncio.run(auto._delay()) <= 3.1  # the refused one does not hold back the next stop_at


def test_no_busy_loop_on_another_accounts_or_one_that_stays_running(recorder):
    aws = StopAnswers(stuck={"i-0000000000000000c"})
    auto = stopper(recorder, aws)
    put(recorder, "i-0000000000000000d", at(-1), account="999999999999")  # another account's: never sent
    put(recorder, "i-0000000000000000c", at(-1))
    assert asyncio.run(auto.run_due()) == ["i-0000000000000000c"]
    assert recorder.db.get_instance("i-0000000000000000c")["state"] == "running"  # EC2 says it still runs
    assert CHECK_SECONDS - 1 < asyncio.run(auto._delay()) <= CHECK_SECONDS
    assert aws.calls == [["i-0000000000000000c"]]


def test_a_sweep_that_records_a_due_instance_running_wakes_the_auto_stopper_after_its_commit(recorder):
    """After a restart, a record still `pending` is not due (EC2 cannot stop it yet): the first round
    passes it by. The sweep that records it running must wake the auto-stopper, which then sees it due."""
    instance_id = "i-0000000000000000e"
    put(recorder, instance_id, at(-5), state="pending")
    auto = stopper(recorder)
    assert asyncio.run(auto.run_due()) == []
    seen: list[list[str]] = []

    def woken() -> None:  # what a woken auto-stopper's next round finds (so: after the commit)
        seen.append([r["id"] for r in Database(recorder.db.path).due_for_stop(at(0), recorder.region,
                                                                               recorder.endpoint)])

    recorder.on_stop_armed = woken
    instance = {"InstanceId": instance_id, "State": {"Name": "running"}, "Tags": MANAGED}
    recorder.apply_sweep([instance], at(0))
    assert seen == [[instance_id]]
    recorder.apply_sweep([instance], at(0))  # running already: nothing new to wake it for
    assert seen == [[instance_id]]
    assert asyncio.run(auto.run_due()) == [instance_id]


@pytest.mark.parametrize("state", ["running", "stopped"])
def test_a_sweep_adopts_a_hand_made_instance_with_the_default_auto_stop(recorder, state):
    armed: list[bool] = []
    recorder.on_stop_armed = lambda: armed.append(True)
    before = datetime.now(UTC)
    recorder.apply_sweep([{"InstanceId": "i-0000000000000000f", "State": {"Name": state}, "Tags": MANAGED,
                           "ImageId": "ami-0123456789abcdef0", "InstanceType": "t3.micro",
                           "LaunchTime": "2026-01-01T00:00:00+00:00"}], at(0))
    row = recorder.db.get_instance("i-0000000000000000f")
    minutes = recorder.settings.default_auto_stop_minutes
    assert minutes and row["auto_stop_minutes"] == minutes
    if state == "running":  # from its adoption, not its launch months ago
        stop_at = datetime.fromisoformat(row["stop_at"].replace("Z", "+00:00"))
        assert before + timedelta(minutes=minutes) <= stop_at <= datetime.now(UTC) + timedelta(minutes=minutes)
        assert armed == [True]
    else:  # armed when it starts, as one created through the API
        assert row["stop_at"] is None and armed == []


def test_with_no_default_an_adopted_instance_has_no_auto_stop(tmp_path):
    db = Database(tmp_path / "x.db")
    db.migrate()
    recorder = Recorder(Settings(_env_file=None, default_auto_stop_minutes=None), db,  # type: ignore[call-arg]
                        lambda ami: "ec2-user")
    recorder.apply_sweep([{"InstanceId": "i-00000000000000010", "State": {"Name": "running"}, "Tags": MANAGED}],
                         at(0))
    row = db.get_instance("i-00000000000000010")
    assert row["auto_stop_minutes"] is None and row["stop_at"] is None


def test_a_stop_moved_after_the_round_began_is_not_sent_and_a_scheduled_one_is_a_schedule_stop(recorder):
    """Issue 27: under the instances' locks the round reads them again: a snooze (or PATCH) answered before the stop
    went out wins. One whose stop is its schedule's is recorded as action schedule_stop, source schedule."""
    aws = StopAnswers()
    auto = stopper(recorder, aws)
    put(recorder, "i-0000000000000000f", at(-1), stop_source="schedule")
    put(recorder, "i-00000000000000010", at(-1))
    rows = {r["id"]: r for r in recorder.db.due_for_stop(at(0), None, recorder.endpoint)}
    recorder.db.update_instance("i-00000000000000010", {"stop_at": at(3600), "snoozed_until": at(3600)})
    assert asyncio.run(auto._stop(rows, sorted(rows))) == ["i-0000000000000000f"]
    assert aws.calls == [["i-0000000000000000f"]]
    event = recorder.db.list_events("i-0000000000000000f")[-1]
    assert (event["action"], event["source"], event["to_state"]) == ("schedule_stop", "schedule", "stopping")
