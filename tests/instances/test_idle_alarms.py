"""The pure parts of CloudWatch: what an instance shows of its alarm, how an alarm found in CloudWatch is read
back as a setting, datapoint times from either CLI, and the metrics cache (with a counting stand-in runner)."""

import asyncio

import pytest

from app.instances.idle_alarms import Metrics, _cloudwatch_time, idle_alarm_view, observed_setting, wanted
from app.store import canonical_json
from app.store.rows import InstanceState

ID = "i-0123456789abcdef0"
SETTING = canonical_json({"cpu_below_percent": 5.0, "for_minutes": 30})
ALARM = {"AlarmName": f"ec2-creator-local-idle-stop-{ID}", "MetricName": "CPUUtilization", "Namespace": "AWS/EC2",
         "ComparisonOperator": "LessThanThreshold", "Threshold": 5.0, "Period": 300, "EvaluationPeriods": 6,
         "AlarmActions": ["arn:aws:automate:us-east-1:ec2:stop"]}


@pytest.mark.parametrize(("want", "held", "status"), [
    (None, None, None), (SETTING, None, "pending"), (SETTING, SETTING, "set"), (None, SETTING, "deleting"),
    (SETTING, "{}", "pending"),
])
def test_what_an_instance_shows_of_its_alarm(want, held, status):
    view = idle_alarm_view(ID, want, held, "boom" if status else None)
    assert (view or {}).get("status") == status
    if view:
        assert view == {"name": f"ec2-creator-local-idle-stop-{ID}", "status": status, "error": "boom"}


@pytest.mark.parametrize("state", ["shutting-down", "terminated", "failed"])
def test_an_instance_that_is_going_wants_no_alarm(state):
    row = {"state": InstanceState(state), "stop_when_idle": {"cpu_below_percent": 5.0, "for_minutes": 30}}
    assert wanted(row) is None
    assert wanted({**row, "state": InstanceState.STOPPED}) == SETTING


def test_an_alarm_of_ours_reads_back_as_its_setting_and_a_changed_one_as_foreign():
    assert observed_setting(ALARM) == SETTING
    assert observed_setting({**ALARM, "Threshold": 2.5, "EvaluationPeriods": 3}) == canonical_json(
        {"cpu_below_percent": 2.5, "for_minutes": 15})
    for changed in ({"AlarmActions": []}, {"Period": 60}, {"ComparisonOperator": "GreaterThanThreshold"},
                    {"MetricName": "NetworkIn"}, {"Threshold": None}):
        assert observed_setting({**ALARM, **changed}) == "{}"  # not what we put: put again


def test_datapoint_times_from_both_clis_read_the_same():
    assert _cloudwatch_time(1795852047) == "2026-11-28T07:47:27.000000Z"  # v1: epoch seconds
    assert _cloudwatch_time("2026-11-28T07:47:27+00:00") == "2026-11-28T07:47:27.000000Z"  # v2
    assert _cloudwatch_time(None) is None and _cloudwatch_time(True) is None


class CountingRunner:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def run(self, script, *args, region=None, background=False):
        self.calls.append(args)
        await asyncio.sleep(0.05)
        return {"Datapoints": [{"Timestamp": "2026-11-28T07:50:00+00:00", "Average": 2.0, "Unit": "Percent"},
                               {"Timestamp": 1795851900, "Average": 1.0, "Unit": "Percent"}]}


def test_one_process_per_series_shared_by_concurrent_asks_and_cached():
    runner = CountingRunner()
    metrics = Metrics(runner)
    row = {"id": ID, "region": "us-east-1"}

    async def scenario():
        first = await asyncio.gather(*(metrics.series(row, "CPUUtilization", 60, 300) for _ in range(5)))
        again = await metrics.series(row, "CPUUtilization", 60, 300)
        other = await metrics.series(row, "CPUUtilization", 120, 300)
        return first, again, other

    first, again, other = asyncio.run(scenario())
    assert len(runner.calls) == 2 and all(answer == first[0] for answer in [*first, again])
    assert [p["average"] for p in first[0]["datapoints"]] == [1.0, 2.0]  # oldest first
    assert first[0]["unit"] == "Percent" and other["start"] < first[0]["start"]


def test_a_create_without_stop_when_idle_hashes_as_before_the_field_existed():
    from app.instances.schemas import InstanceCreate
    from app.instances.service import request_hash

    body = {"name": "a", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}
    old = InstanceCreate.model_validate(body).model_dump(exclude={"stop_when_idle", "ssh_from", "schedule"})
    import hashlib
    import json
    expected = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert request_hash(InstanceCreate.model_validate(body)) == expected
    assert request_hash(InstanceCreate.model_validate(body | {"stop_when_idle": {"cpu_below_percent": 5,
                                                                                  "for_minutes": 30}})) != expected
