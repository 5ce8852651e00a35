"""The pool bounds a replica's PostgreSQL connections: under 50 concurrent requests a real server holds at most
DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW connections, plus its leadership and lock sessions (counted by
PostgreSQL itself, in pg_stat_activity). The store before the pool kept one connection per worker thread:
about 40 on a busy replica."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.support.server import ApiServer

pytestmark = pytest.mark.integration

POOL, OVERFLOW, SESSIONS = 2, 1, 2  # SESSIONS: the leadership's and the per-instance locks'


def test_fifty_concurrent_requests_hold_at_most_pool_plus_overflow_connections(emulator, fresh_emulator, pg_cluster,
                                                                              pg_catalog_template, tmp_path):
    url = pg_cluster.new_database(pg_catalog_template)
    database = url.rsplit("/", 1)[1]
    server = ApiServer(tmp_path, emulator.url, DATABASE_URL=url, DATABASE_POOL_SIZE=str(POOL),
                       DATABASE_MAX_OVERFLOW=str(OVERFLOW))
    peak, stop = [0], threading.Event()

    def watch() -> None:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            while not stop.is_set():
                count = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                      (database,)).fetchone()[0]
                peak[0] = max(peak[0], count)

    try:
        with httpx.Client(base_url=server.url, timeout=120) as api:
            created = api.post("/instances", json={"name": "pooled", "ami": "amazon-linux-2023",
                                                   "instance_type": "t3.micro"})
            assert created.status_code == 201, created.text
            box = created.json()["id"]
            paths = [f"/instances/{box}/events", "/instances", f"/instances/{box}", "/budget", "/metrics"]
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            with ThreadPoolExecutor(50) as pool:
                answers = list(pool.map(lambda i: api.get(paths[i % len(paths)]).status_code, range(50)))
            stop.set()
            watcher.join(10)
        assert answers == [200] * 50
        assert 1 < peak[0] <= POOL + OVERFLOW + SESSIONS, peak[0]
    finally:
        stop.set()
        server.stop()
