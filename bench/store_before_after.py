"""The store before and after SQLAlchemy (issue 26): GET /instances p50 at 1,000 tracked instances on both
engines, through a real server of each code tree, and the store time a create adds (the store calls of one
create, timed in process: the old store is tests/store/legacy/db_v8.py, a frozen copy of it).

    .venv/bin/python bench/store_before_after.py /path/to/old/tree   # e.g. a worktree of the commit before

Prints a JSON object; docs/PERFORMANCE.md quotes it. About a minute.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.store import Database  # noqa: E402
from tests.store.legacy import db_v8  # noqa: E402
from tests.support.emulator import Emulator  # noqa: E402
from tests.support.postgres import PgCluster  # noqa: E402
from tests.support.processes import free_port, safe_env, stop_process, wait_http  # noqa: E402

TRACKED, SAMPLES, CREATES = 1000, 300, 100


def fill(store, count: int) -> None:
    """`count` running instances of another EC2 (listed, never judged by this server's sweeps)."""
    with store.transaction():
        for i in range(count):
            store.upsert_instance({"id": f"i-{i:017x}", "name": f"bench-{i}", "state": "running",
                                   "instance_type": "t3.micro", "region": "us-east-1", "endpoint": "elsewhere",
                                   "tags": {"k": "v"}, "created_at": f"2026-01-01T00:00:{i % 60:02d}.000000Z",
                                   "updated_at": "2026-01-01T00:00:00.000000Z"})


def list_p50(tree: Path, url: str, emulator: str, tmp: Path) -> float:
    port = free_port()
    env = safe_env(DATABASE_URL=url, EC2_ENDPOINT_URL=emulator, AWS_ENDPOINT_URL=emulator,
                   RECONCILE_INTERVAL_SECONDS="3600", BUDGET_USD="100000")
    with open(tmp / f"server-{port}.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(tree),
                                 "--host", "127.0.0.1", "--port", str(port)], cwd=tree, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc)
            times = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                assert len(client.get("/instances").json()["instances"]) == TRACKED
                for _ in range(SAMPLES):
                    t0 = time.perf_counter()
                    client.get("/instances").raise_for_status()
                    times.append(time.perf_counter() - t0)
            return round(statistics.median(times) * 1000, 2)
        finally:
            stop_process(proc)


def create_store_ms(store) -> float:
    """The store calls of one create (claim the launch; admit: reserve under the write lock; record the
    instance and its event; settle the launch; release the reservation), median over CREATES."""
    times = []
    for i in range(CREATES):
        t0 = time.perf_counter()
        rid = f"rid-{i}"
        store.claim_launch(rid, f"key-{i}", "h", {"ami_id": "ami-1"}, "us-east-1", "")
        with store.transaction(instances=False):
            store.reservations("2026-01-01T00:00:00.000000Z")
            store.reserve(f"create:{rid}", 0.01, "2999-01-01T00:00:00.000000Z")
        with store.transaction():
            store.upsert_instance({"id": f"i-c{i:016x}", "name": "c", "state": "pending", "request_id": rid,
                                   "region": "us-east-1", "endpoint": "", "created_at": "t", "updated_at": "t"})
            store.add_event(f"i-c{i:016x}", "create", None, "pending", "api", rid)
            store.finish_launch(rid, db_v8.LaunchStatus.LAUNCHED, f"i-c{i:016x}")
        store.unreserve(f"create:{rid}")
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def main(old_tree: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="store-bench-"))
    (tmp / "moto").mkdir()
    emulator, cluster = Emulator(tmp / "moto"), PgCluster.start()
    results: dict = {}
    try:
        for engine in ("sqlite", "postgres"):
            for label, tree, opener in (("before", old_tree, lambda u: db_v8.open_database(u, Path(u))),
                                        ("after", ROOT, Database)):
                url = cluster.new_database() if engine == "postgres" else str(tmp / f"{label}.db")
                store = opener(url)
                store.migrate()
                fill(store, TRACKED)
                results[f"{engine} {label}: GET /instances at {TRACKED} (ms, p50)"] = \
                    list_p50(tree, url, emulator.url, tmp)
                results[f"{engine} {label}: store time of a create (ms, p50)"] = create_store_ms(store)
                if hasattr(store, "dispose"):
                    store.dispose()
    finally:
        emulator.close()
        cluster.stop()
    return results


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]).resolve()), indent=2))
