"""`make test` runs the benchmark at small sizes so it keeps working.

Only the deterministic part of the budget is asserted (how many `aws` processes each operation
spawns, that the burst all succeeds within MAX_AWS_PROCESSES): timings and memory depend on the
machine and are left to the full `make bench`.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import CATALOG_TEMPLATES

pytestmark = pytest.mark.integration  # real processes: make test-fast leaves these out

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_counts_processes_and_reports(tmp_path, pg_cluster, emulator):
    out, doc = tmp_path / "results.json", tmp_path / "PERFORMANCE.md"
    # Phase 7 on a new database of the run's PostgreSQL cluster, not on a cluster of its own (initdb and a server);
    # the session's moto server (reset) and its AMI catalogue, not a moto server of its own fetching it again.
    try:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "run_bench.py"), "--smoke", "--json", str(out),
                               "--doc", str(doc), "--postgres-url", pg_cluster.new_database(),
                               "--emulator-url", emulator.url,
                               "--catalog-template", str(CATALOG_TEMPLATES[emulator.url])],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        emulator.reset()  # the bench leaves its instances: the next module finds the emulator as fresh_emulator's
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads(out.read_text())

    counts = [c for c in results["checks"] if c["kind"] == "count"]
    assert [c for c in counts if not c["pass"]] == []
    assert {c["kind"] for c in results["checks"]} == {"count", "timing", "memory"}

    per_op = results["aws_processes_per_operation"]
    assert set(per_op) == {"create", "get", "list", "stop", "start", "delete"}
    assert per_op["create"]["by_operation"].get("run-instances") == 1
    assert per_op["get"]["total"] == per_op["list"]["total"] == 0
    assert results["sweep"]["aws_processes_per_sweep"] == 1
    assert results["burst"]["succeeded"] == results["burst"]["creates"]
    assert 0 < results["burst"]["max_concurrent_aws"] <= 8
    for figure in ("p50_ms", "p99_ms", "max_ms"):
        assert results["concurrency"]["health_during_creates"][figure] > 0
    for size in results["scale"].values():
        assert size["list"]["p50_ms"] > 0 and size["get"]["p50_ms"] > 0
    assert results["raw"]["run_instances_median_s"] > 0 and results["raw"]["describe_instances_median_s"] > 0
    assert results["memory"]["server_idle_mib"] > 0 and results["burst"]["peak_total_mib"] > 0
    assert results["machine"]["cpus"] >= 1 and "aws-cli/" in results["machine"]["aws_cli_version"]

    report = doc.read_text()
    assert "## Budget" in report and "AWS CLI: `aws-cli/" in report
