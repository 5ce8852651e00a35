"""Reconciliation through the real server with the background loop slowed down, so each sweep is ours."""

from datetime import UTC, datetime, timedelta

import pytest

from app.budget.spending import PriceBook, Rates
from app.config import DEFAULT_PRICES_FILE

# Settings of the module's api_server (conftest.py).
SERVER_ENV = {
    # Each sweep is ours; EC2 here is the emulator, which is never late: one sweep and a direct
    # lookup are proof enough (the grace itself is tested in test_consistency.py).
    "RECONCILE_INTERVAL_SECONDS": "3600", "CONSISTENCY_GRACE_SECONDS": "0", "GONE_AFTER_MISSED_SWEEPS": "1"}


@pytest.fixture
def slow_server(api_server):
    return api_server


def launch(emulator, tags: list[dict] | None = None) -> str:
    spec = [{"ResourceType": "instance", "Tags": tags}] if tags else []
    return emulator.ec2.run_instances(ImageId=emulator.ami(), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                                      TagSpecifications=spec)["Instances"][0]["InstanceId"]


def test_sync_reports_adopted_updated_and_gone(api, slow_server, fresh_emulator):
    managed = [{"Key": "ManagedBy", "Value": "ec2-creator-local"}, {"Key": "Name", "Value": "hand"},
               {"Key": "Owner", "Value": "me"}]
    adopted = launch(fresh_emulator, managed)
    launch(fresh_emulator)  # untagged: never listed
    before = len(slow_server.aws_calls())
    first = api.post("/instances/sync").json()
    assert first == {"adopted": [adopted], "updated": [], "gone": [], "missing": []}
    assert len(slow_server.aws_calls()) - before == 1  # one describe-instances, whatever was found
    row = api.get(f"/instances/{adopted}").json()
    assert row["name"] == "hand" and row["tags"] == {"Owner": "me"} and row["state"] == "running"
    # It stops by itself too: DEFAULT_AUTO_STOP_MINUTES (480) from its adoption, and the budget counts it so far.
    stop_at = datetime.fromisoformat(row["stop_at"].replace("Z", "+00:00"))
    assert row["auto_stop_minutes"] == 480
    assert timedelta(minutes=479) < stop_at - datetime.now(UTC) <= timedelta(minutes=480)
    budget = api.get("/budget").json()
    [entry] = [i for i in budget["instances"] if i["id"] == adopted]
    rates = Rates.of(PriceBook.load(DEFAULT_PRICES_FILE), "t3.micro", row["region"], 8)
    assert rates is not None and entry["stop_at"] == row["stop_at"]
    month_end = datetime.fromisoformat(budget["period_end"].replace("Z", "+00:00"))
    hours_left = (month_end - datetime.now(UTC)).total_seconds() / 3600
    assert entry["projected_usd"] <= (8 * (rates.compute + rates.ipv4) + hours_left * rates.storage) * 1.01

    fresh_emulator.ec2.stop_instances(InstanceIds=[adopted])
    assert api.post("/instances/sync").json() == {"adopted": [], "updated": [adopted], "gone": [], "missing": []}
    assert api.get(f"/instances/{adopted}").json()["state"] == "stopped"

    fresh_emulator.reset()  # EC2 forgets it entirely
    assert api.post("/instances/sync").json() == {"adopted": [], "updated": [], "gone": [adopted], "missing": []}
    assert api.get(f"/instances/{adopted}").json()["state"] == "terminated"
    assert [i["id"] for i in api.get("/instances").json()["instances"]] == []


def test_records_survive_a_restart(api, slow_server, fresh_emulator):
    item = api.post("/instances", json={"name": "keep", "ami": "amazon-linux-2023",
                                        "instance_type": "t3.micro"}).json()
    slow_server.stop()
    slow_server.start()
    assert api.get(f"/instances/{item['id']}").json()["name"] == "keep"
