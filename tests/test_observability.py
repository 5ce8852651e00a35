"""Observability through the real server: GET /metrics parses with prometheus-client's own parser and its
counters move with requests and `aws` processes; X-Request-Id is kept (when sane), echoed and logged;
METRICS_TOKEN opens /metrics alone; LOG_FORMAT=json writes one JSON object per line."""

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import wait_until
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer, aws_error

# No SSH rule (ssh_from none): one `aws` process less per create; no assertion here is about SSH.
BODY = {"name": "observed", "ami": "amazon-linux-2023", "instance_type": "t3.micro", "ssh_from": "none"}


def scrape(client: httpx.Client, **kw) -> dict[tuple, float]:
    answer = client.get("/metrics", **kw)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_requests_and_aws_processes(api, api_server):
    before = scrape(api)
    for _ in range(3):
        assert api.get("/health").status_code == 200
    box = api.post("/instances", json=BODY).json()["id"]
    api.post("/instances/sync").raise_for_status()
    assert api.get("/instances/i-0000000000000000f").status_code == 404
    after = scrape(api)
    health = dict(route="/health", method="GET", status="200")
    moved = value(after, "ec2cl_http_requests_total", **health) - value(before, "ec2cl_http_requests_total", **health)
    assert moved == 3
    assert value(after, "ec2cl_http_requests_total", route="/instances/{instance_id}", method="GET", status="404") >= 1
    assert value(after, "ec2cl_http_request_duration_seconds_count", route="/instances") >= 1
    created = dict(script="create_instance.sh", outcome="ok")
    assert value(after, "ec2cl_aws_processes_total", **created) - value(before, "ec2cl_aws_processes_total",
                                                                         **created) == 1
    assert value(after, "ec2cl_aws_process_duration_seconds_count", script="list_instances.sh") >= 1
    running = [i for i in api.get("/instances").json()["instances"] if i["state"] == "running"]
    assert value(after, "ec2cl_instances", state="running") == len(running) and box in {i["id"] for i in running}
    assert value(after, "ec2cl_reconcile_last_success_timestamp_seconds") > 1.7e9
    committed = api.get("/budget").json()["committed_usd"]
    assert value(after, "ec2cl_budget_committed_usd") == pytest.approx(committed, rel=0.01) and committed > 0


def test_a_failed_aws_process_is_counted_by_its_error_code_and_logged_with_the_request_id(api, api_server,
                                                                                           fresh_emulator):
    # The stop is the subject, not how the box came to be tracked: launched in the emulator, adopted by a sync.
    [box] = launch_managed(fresh_emulator, name=BODY["name"])
    adopt(api, [box])
    api_server.set_faults({"op": "stop-instances", "times": 1, "fail": aws_error(
        "RequestLimitExceeded", "StopInstances", "Request limit exceeded.")})
    answer = api.post(f"/instances/{box}/stop", headers={"X-Request-Id": "ticket-42.stop"})
    assert answer.status_code == 503 and answer.headers["x-request-id"] == "ticket-42.stop"
    assert value(scrape(api), "ec2cl_aws_processes_total", script="stop_instance.sh", outcome="aws_throttled") >= 1
    wait_until(lambda: any("[ticket-42.stop]" in line and "stop_instance.sh failed" in line
                           for line in api_server.server_log().splitlines()), timeout=10)
    # An id that is not a sane token is replaced, never echoed.
    odd = api.get("/health", headers={"X-Request-Id": "a b\"<script>"})
    assert odd.headers["x-request-id"] != "a b\"<script>" and len(odd.headers["x-request-id"]) == 32


def test_metrics_token_opens_metrics_only_and_json_logs(emulator, tmp_path):
    server = ApiServer(tmp_path, emulator.url, API_TOKEN="the-api-token-0123456789",
                       METRICS_TOKEN="the-scraper-token-0123456789", LOG_FORMAT="json")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/metrics").status_code == 401
            scraper = {"Authorization": "Bearer the-scraper-token-0123456789"}
            assert scrape(client, headers=scraper)
            assert scrape(client, headers={"Authorization": "Bearer the-api-token-0123456789"})
            assert client.get("/instances", headers=scraper).status_code == 401  # a scraper reads metrics only
            client.get("/health", headers={"X-Request-Id": "json-probe-1"})
        lines = [line for line in server.server_log().splitlines() if line.startswith("{")]
        records = [json.loads(line) for line in lines]
        target = next(r["message"] for r in records if r["logger"] == "ec2_creator" and "targets" in r["message"])
        assert "; budget 100000.00 USD a month (BUDGET_USD);" in target, target  # the budget in force, and whose
        assert all({"time", "level", "logger", "message", "request_id"} <= r.keys() for r in records)
        assert any(r["request_id"] == "json-probe-1" for r in records)  # uvicorn's access line of that request
    finally:
        server.stop()
