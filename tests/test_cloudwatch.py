"""CloudWatch through the real server, scripts, CLI and emulator: the metrics route (one `aws` process per
series, then cached) and the idle-stop alarm kept by the AlarmKeeper (put, changed, deleted, re-put after a
failure or after it was deleted by hand)."""

import os
import signal
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.processes import wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import aws_error, synced_client

BODY = {"name": "watched", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}
IDLE = {"cpu_below_percent": 5, "for_minutes": 30}


def put_metric(emulator, instance_id: str, name: str, value: float, unit: str, minutes_ago: float) -> None:
    emulator.cloudwatch.put_metric_data(Namespace="AWS/EC2", MetricData=[{
        "MetricName": name, "Dimensions": [{"Name": "InstanceId", "Value": instance_id}], "Unit": unit,
        "Value": value, "Timestamp": datetime.now(UTC) - timedelta(minutes=minutes_ago)}])


@pytest.fixture(scope="module")
def trio(api_server, emulator) -> dict[str, str]:
    """Three running instances the server tracks, one for each test about what is done to an instance (its alarm
    refused then retried, ended before its first put, of another region), not about creating it: launched in the
    emulator and adopted by one sync for the three (tests/support/seeding.py; tests/test_lifecycle.py tests
    creating). Each of those tests looks only at its own box, by id: they used to reset the emulator and adopt one
    box each (a reset and a describe-instances per test)."""
    boxes = launch_managed(emulator, 3, name=BODY["name"])
    with synced_client(api_server) as client:
        adopt(client, boxes)
    return dict(zip(("refused", "ended", "other-region"), boxes, strict=True))


@pytest.fixture(scope="module")
def kept(api_server, emulator):
    """A client and one running instance the server tracks, shared by the two tests that only read its metrics
    or are refused before any `aws` process (one adoption for both, not a reset and a sync each): launched in the
    emulator and adopted like `trio`'s."""
    [box] = launch_managed(emulator, name=BODY["name"])
    with synced_client(api_server) as client:
        adopt(client, [box])
        yield client, box


def operations(calls: list[list[str]], about: str = "", service: str = "cloudwatch") -> list[str]:
    """The `service` operations among `calls`, of those that name `about` (other tests' instances stay out)."""
    return [c[c.index(service) + 1] for c in calls if service in c and about in " ".join(c)]


def alarm_of(api, instance_id: str, status: str | None, timeout: float = 20) -> dict | None:
    """Wait until the instance shows its alarm in `status` (None: no alarm); return what it shows."""
    def shown():
        got = api.get(f"/instances/{instance_id}").json()["idle_alarm"]
        return (got or {}).get("status") == status if status else got is None

    wait_until(shown, timeout=timeout, interval=0.2)
    return api.get(f"/instances/{instance_id}").json()["idle_alarm"]


def test_metrics_come_from_cloudwatch_once_per_series_then_from_the_cache(kept, api_server, emulator):
    api, box = kept
    put_metric(emulator, box, "CPUUtilization", 42.5, "Percent", 3)
    put_metric(emulator, box, "NetworkIn", 2048, "Bytes", 3)
    put_metric(emulator, box, "CPUUtilization", 7.5, "Percent", 90)  # older than the window asked for
    mark = len(api_server.aws_calls())
    got = api.get(f"/instances/{box}/metrics", params={"metric": "CPUUtilization", "minutes": 60, "period": 300})
    assert got.status_code == 200, got.text
    series = got.json()
    assert [p["average"] for p in series["datapoints"]] == [42.5]
    assert series["unit"] == "Percent" and series["period"] == 300 and series["instance_id"] == box
    assert series["start"] < series["datapoints"][0]["timestamp"] < series["end"]
    # The same question again is answered from the cache; another metric costs one more process.
    again = api.get(f"/instances/{box}/metrics", params={"metric": "CPUUtilization", "minutes": 60, "period": 300})
    assert again.json() == series
    network = api.get(f"/instances/{box}/metrics", params={"metric": "NetworkIn"}).json()
    assert [p["sum"] for p in network["datapoints"]] == [2048.0] and network["unit"] == "Bytes"
    assert operations(api_server.aws_calls()[mark:], box) == ["get-metric-statistics"] * 2
    # A longer window reaches the older datapoint.
    day = api.get(f"/instances/{box}/metrics", params={"minutes": 1440, "period": 3600}).json()
    assert sorted(p["average"] for p in day["datapoints"]) in ([7.5, 42.5], [25.0])


BAD_METRIC_QUERIES = [{"metric": "DiskReadOps"}, {"minutes": 0}, {"minutes": 1441}, {"period": 90}, {"period": 30},
                      {"period": 86460}]


def test_bad_metric_queries_are_422_and_spawn_nothing(kept, api_server):
    api, box = kept  # one instance for every query (each used to make its own)
    for params in BAD_METRIC_QUERIES:
        mark = len(api_server.aws_calls())
        got = api.get(f"/instances/{box}/metrics", params=params)
        assert (got.status_code, got.json()["code"]) == (422, "validation_error"), (params, got.text)
        assert api.get("/instances/i-0000000000000000f/metrics").status_code == 404
        assert api_server.aws_calls()[mark:] == [], params


def test_the_idle_alarm_is_put_changed_and_deleted_with_the_instance(reader, api_server, emulator):
    # No SSH rule (ssh_from none): one `aws` process fewer, and the alarm is what this test is about. It looks only
    # at its own instance and alarm, by id and name: no reset and no sync first (`reader`).
    api = reader
    created = api.post("/instances", json=BODY | {"stop_when_idle": IDLE, "ssh_from": "none"})
    assert created.status_code == 201, created.text
    box = created.json()["id"]
    name = f"ec2-creator-local-idle-stop-{box}"
    assert created.json()["stop_when_idle"] == {"cpu_below_percent": 5.0, "for_minutes": 30}
    assert created.json()["idle_alarm"] == {"name": name, "status": "pending", "error": None}
    assert alarm_of(api, box, "set") == {"name": name, "status": "set", "error": None}
    alarm = emulator.alarms()[name]
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": box}]
    assert (alarm["MetricName"], alarm["Namespace"], alarm["Statistic"]) == ("CPUUtilization", "AWS/EC2", "Average")
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (5.0, "LessThanThreshold")
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (300, 6, "notBreaching")
    assert alarm["AlarmActions"] == ["arn:aws:automate:us-east-1:ec2:stop"]
    listed = {i["id"]: i for i in api.get("/instances").json()["instances"]}
    assert listed[box]["idle_alarm"]["status"] == "set" and listed[box]["stop_when_idle"]["for_minutes"] == 30

    # A new setting replaces the alarm (one put); removing it deletes the alarm (one delete).
    mark = len(api_server.aws_calls())
    changed = api.patch(f"/instances/{box}", json={"stop_when_idle": {"cpu_below_percent": 2.5, "for_minutes": 15}})
    assert changed.status_code == 200 and changed.json()["idle_alarm"]["status"] == "pending"
    alarm_of(api, box, "set")
    alarm = emulator.alarms()[name]
    assert (alarm["Threshold"], alarm["EvaluationPeriods"]) == (2.5, 3)
    removed = api.patch(f"/instances/{box}", json={"stop_when_idle": None})
    assert removed.json()["stop_when_idle"] is None and removed.json()["idle_alarm"]["status"] == "deleting"
    alarm_of(api, box, None)
    assert name not in emulator.alarms()
    assert operations(api_server.aws_calls()[mark:], name) == ["put-metric-alarm", "delete-alarms"]

    # Set again, then DELETE the instance: the alarm goes with it.
    api.patch(f"/instances/{box}", json={"stop_when_idle": IDLE}).raise_for_status()
    alarm_of(api, box, "set")
    assert api.delete(f"/instances/{box}").status_code == 202
    alarm_of(api, box, None)
    assert name not in emulator.alarms()
    # It keeps showing its setting; a new one is refused (an unchanged one is a no-op, like any PATCH).
    assert api.get(f"/instances/{box}").json()["stop_when_idle"] == {"cpu_below_percent": 5.0, "for_minutes": 30}
    refused = api.patch(f"/instances/{box}", json={"stop_when_idle": {"cpu_below_percent": 9, "for_minutes": 30}})
    assert (refused.status_code, refused.json()["code"]) == (409, "wrong_state")


@pytest.mark.parametrize("idle", [{"cpu_below_percent": 0, "for_minutes": 30},
                                  {"cpu_below_percent": 101, "for_minutes": 30},
                                  {"cpu_below_percent": "5", "for_minutes": 30},
                                  {"cpu_below_percent": 5, "for_minutes": 7},
                                  {"cpu_below_percent": 5, "for_minutes": 1445},
                                  {"cpu_below_percent": 5},
                                  {"cpu_below_percent": 5, "for_minutes": 30, "extra": 1}])
def test_bad_idle_settings_are_422_before_any_process(api_server, idle):
    """Only refusals: neither a fresh emulator nor a sweep is needed (the `api` fixture's reset and sync)."""
    mark = len(api_server.aws_calls())
    with httpx.Client(base_url=api_server.url, timeout=60) as api:
        got = api.post("/instances", json=BODY | {"stop_when_idle": idle})
    assert (got.status_code, got.json()["code"]) == (422, "validation_error"), got.text
    assert api_server.mutations_since(mark, ignore_tidying=True) == []  # no reset: earlier tests' groups


def test_a_refused_put_shows_its_error_and_is_retried(reader, trio, api_server, emulator):
    api, box = reader, trio["refused"]
    api_server.set_faults({"op": "put-metric-alarm", "times": 1,
                           "fail": aws_error("AccessDenied", "PutMetricAlarm",
                                             "User is not authorized to perform: cloudwatch:PutMetricAlarm")})
    api.patch(f"/instances/{box}", json={"stop_when_idle": IDLE}).raise_for_status()

    def failed():
        return (api.get(f"/instances/{box}").json()["idle_alarm"] or {}).get("error")

    wait_until(failed, timeout=20)
    shown = api.get(f"/instances/{box}").json()["idle_alarm"]
    assert shown["status"] == "pending" and "not authorized" in shown["error"]
    assert alarm_of(api, box, "set", timeout=30)["error"] is None  # the retry, about 5 s later
    assert f"ec2-creator-local-idle-stop-{box}" in emulator.alarms()


def test_an_instance_ended_before_its_first_put_shows_no_alarm(reader, trio, api_server, emulator):
    api, box = reader, trio["ended"]
    api_server.set_faults({"op": "put-metric-alarm", "fail": aws_error(
        "AccessDenied", "PutMetricAlarm", "User is not authorized to perform: cloudwatch:PutMetricAlarm")})
    api.patch(f"/instances/{box}", json={"stop_when_idle": IDLE}).raise_for_status()
    wait_until(lambda: (api.get(f"/instances/{box}").json()["idle_alarm"] or {}).get("error"), timeout=20)
    assert api.delete(f"/instances/{box}").status_code == 202
    assert alarm_of(api, box, None) is None  # nothing was ever put: nothing to delete, nothing shown
    assert f"ec2-creator-local-idle-stop-{box}" not in emulator.alarms()


def test_an_instance_of_another_region_cannot_get_an_idle_alarm_here(reader, trio, api_server):
    api, box = reader, trio["other-region"]
    with closing(sqlite3.connect(api_server.db_path)) as conn, conn:
        conn.execute("UPDATE instances SET region = 'eu-west-1' WHERE id = ?", (box,))
    refused = api.patch(f"/instances/{box}", json={"stop_when_idle": IDLE})
    assert (refused.status_code, refused.json()["code"]) == (409, "other_region"), refused.text
    assert api.get(f"/instances/{box}").json()["stop_when_idle"] is None


@pytest.fixture(scope="module")
def drifted_then_restarted(api_server, emulator):
    """CloudWatch drifts from the record in two ways and a put is under way when the server is killed; then it
    restarts ONCE: the keeper asks CloudWatch what it holds at start (then every 10 minutes), and that one audit
    must mend both drifts, and the put the kill cut short must be made again (the three tests below).
    - `by_hand`: its alarm was deleted by hand (the record says it is set): put again.
    - `lost`: two replicas, one deletes the alarm and records none, another's late put lands after it (the record
      says none, CloudWatch holds one): deleted.
    - `killed`: its put hangs, then fails (so the orphaned `aws` process cannot put it after the kill), and the
      server is killed (-9) while it hangs: put after the restart.
    One restart and one adoption for the three: a restart is a server start, its start-up sweep and the audit. EC2
    and CloudWatch are not reset first (each test looks at its own box by id; the earlier tests' alarms agree with
    the record): a reset took away the alarm of an earlier test's box, which the audit then put again."""
    by_hand, lost, killed = launch_managed(emulator, 3, name=BODY["name"])
    with synced_client(api_server) as api:
        adopt(api, [by_hand, lost, killed])
        for box in (by_hand, lost):
            api.patch(f"/instances/{box}", json={"stop_when_idle": IDLE}).raise_for_status()
        for box in (by_hand, lost):
            alarm_of(api, box, "set")
        emulator.cloudwatch.delete_alarms(AlarmNames=[f"ec2-creator-local-idle-stop-{by_hand}"])
        api.patch(f"/instances/{lost}", json={"stop_when_idle": None}).raise_for_status()
        alarm_of(api, lost, None)
        emulator.cloudwatch.put_metric_alarm(  # the other replica's late put
            AlarmName=f"ec2-creator-local-idle-stop-{lost}", Namespace="AWS/EC2", MetricName="CPUUtilization",
            Statistic="Average", Period=300, EvaluationPeriods=6, Threshold=5.0,
            ComparisonOperator="LessThanThreshold", Dimensions=[{"Name": "InstanceId", "Value": lost}],
            AlarmActions=["arn:aws:automate:us-east-1:ec2:stop"])
        api_server.set_faults({"op": "put-metric-alarm", "times": 1, "delay": 15,
                               "fail": aws_error("InternalFailure", "PutMetricAlarm", "try again")})
        api.patch(f"/instances/{killed}", json={"stop_when_idle": IDLE}).raise_for_status()
        wait_until(lambda: any("put-metric-alarm" in c and killed in " ".join(c) for c in api_server.aws_calls()),
                   timeout=20)
        os.killpg(api_server.proc.pid, signal.SIGKILL)
        api_server.proc.wait()
        api_server.log.close()
        api_server.start()
        yield api, by_hand, lost, killed


def test_an_alarm_deleted_by_hand_is_put_again_after_a_restart(drifted_then_restarted, emulator):
    api, box, _, _ = drifted_then_restarted
    name = f"ec2-creator-local-idle-stop-{box}"
    wait_until(lambda: name in emulator.alarms(), timeout=30)
    assert alarm_of(api, box, "set")["error"] is None


def test_an_alarm_the_record_lost_is_deleted_at_the_next_audit(drifted_then_restarted, emulator):
    api, _, box, _ = drifted_then_restarted
    name = f"ec2-creator-local-idle-stop-{box}"
    wait_until(lambda: name not in emulator.alarms(), timeout=30)
    assert alarm_of(api, box, None) is None


def test_killed_before_the_alarm_was_put_it_is_put_after_restart(drifted_then_restarted, emulator):
    api, _, _, box = drifted_then_restarted
    assert alarm_of(api, box, "set", timeout=30)["error"] is None
    assert f"ec2-creator-local-idle-stop-{box}" in emulator.alarms()
