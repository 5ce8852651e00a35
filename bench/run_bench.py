#!/usr/bin/env python3
"""Benchmark: what each call costs, in `aws` processes, seconds and MiB, against the budget.

Starts its own moto server (or uses --emulator-url's) and its own API server (tests/support's Emulator /
ApiServer / safe_env: fake credentials, explicit 127.0.0.1 endpoint, proxy guard), with AWS_CLI pointing at
tests/support/aws_shim.sh, which logs every `aws` process the server spawns.

    python bench/run_bench.py            # full run: data/bench/results.json + docs/PERFORMANCE.md
    python bench/run_bench.py --smoke    # small sizes, < 60 s, checks only the process-count budget

Phases (full sizes; --smoke uses the small ones in SMOKE):
  1. raw cost: one `aws ec2 describe-instances` and one `aws ec2 run-instances`, timed directly,
     interleaved with API creates (POST /instances) so both see the same machine;
  2. `aws` processes per API operation (create, get, list, stop, start, delete), from the shim log;
  3. 8 serial creates, then 8 concurrent creates with /health probed all along;
  4. a burst of 32 concurrent creates with server + children RSS sampled every 50 ms;
  5. 10 / 100 / 1,000 tracked instances (seeded straight into the emulator, tagged ManagedBy, then
     adopted by a reconcile sweep): GET /instances and GET /instances/{id} p50/p99, server RSS;
  6. at 1,000: a sweep (POST /instances/sync) against one raw describe-instances of the same set.

The reconciler's periodic interval is set to an hour so that only the sweeps the API asks for
(after a mutation, or /instances/sync) run: periodic sweeps would otherwise land inside timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support.emulator import KEY_NAME, Emulator  # noqa: E402
from tests.support.postgres import PgCluster  # noqa: E402
from tests.support.processes import VENV_BIN, safe_env  # noqa: E402
from tests.support.receivers import MailServer, WebhookReceiver, wait_for  # noqa: E402
from tests.support.server import CATALOG_TEMPLATES, ApiServer  # noqa: E402

AWS = VENV_BIN / "aws"
FINDINGS = ROOT / "bench" / "FINDINGS.md"
DEFAULT_JSON = ROOT / "data" / "bench" / "results.json"
DEFAULT_DOC = ROOT / "docs" / "PERFORMANCE.md"

MANAGED_TAG = {"Key": "ManagedBy", "Value": "ec2-creator-local"}
MANAGED_FILTER = '[{"Name":"tag:ManagedBy","Values":["ec2-creator-local"]}]'
MUTATING = {"run-instances", "start-instances", "stop-instances", "terminate-instances"}
# An instance's own SSH security group (ssh_from, issue 25): made and opened to one address before its launch,
# deleted by the sweep after its instance is gone.
SSH_GROUP = {"create-security-group", "authorize-security-group-ingress", "delete-security-group"}
SSH_GROUP_BUDGET = {"create": 2, "delete": 1}
GLOBAL_OPTS_WITH_VALUE = {"--output", "--cli-connect-timeout", "--cli-read-timeout", "--endpoint-url",
                          "--region", "--profile", "--query", "--color", "--ca-bundle"}
MAX_AWS_PROCESSES = 8  # the server's default; the bench does not override it
MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    name: str
    tracked: tuple[int, ...]  # GET latency measured with this many tracked instances
    raw_samples: int  # raw run-instances / API create pairs
    serial: int  # serial creates, then as many concurrent
    burst: int  # concurrent creates under the memory sampler
    list_samples: int
    get_samples: int
    sweep_samples: int
    notify_samples: int = 5  # creates with notifications off and on, interleaved
    concurrency_rounds: int = 2  # serial / concurrent pairs (medians are compared)
    serial_leg: bool = True  # time `serial` creates one after another (the concurrency ratio's base)
    quiet_wait_s: float = 120.0  # before a timed phase, wait up to this long for other load to stop
    few_stops: int = 8  # concurrent POST /instances/{id}/stop (coalesced into one call)
    many_stops: int = 100  # the same with more, and a bulk stop of that many by tag
    stop_samples: int = 5  # single stops, for the latency the window adds
    # The later servers (notifications on, window 0) start with a copy of the first one's AMI catalogue instead of
    # fetching it (four `aws` processes each, outside every measured figure).
    share_catalog: bool = False
    # The creates of the timed phases (1, 1b, 3, 4) ask for this `ssh_from` (None: the default, my_ip). Phase 2's
    # create, whose processes are counted, always asks for the default.
    create_ssh_from: str | None = None
    # Phase 2b's batches of instances are all adopted by one sweep, not one sweep per batch.
    adopt_at_once: bool = False
    # One server with notifications on AND TRANSITION_WINDOW_MS=0 serves phase 1b and the window's cost (its creates
    # only notify, its stops are the window-0 leg), instead of one server each.
    one_second_server: bool = False
    # Phase 1b's notifications-off creates are phase 1's API creates (the same server, body and state: the first
    # `notify_samples` of them) instead of as many more creates; needs raw_samples >= notify_samples.
    off_from_phase1: bool = False
    # Phase 5 empties the emulator first. Without it, the first size is reached on top of what the earlier phases
    # left tracked (it must be larger): after a reset the server's sweep marks every earlier API create gone and
    # tries to delete its own SSH group, which the reset already removed (one `aws` process each).
    reset_before_scale: bool = True
    # Phase 2b times single stops with the 25 ms window against a server with TRANSITION_WINDOW_MS=0 (timing lines
    # only: its second server's sync and two stops, each with its sweep, count nothing the smoke checks).
    window_leg: bool = True
    # Phase 4's burst is phase 3's probed concurrent creates, sampled (the same figures: all succeed, the sampler sees
    # their `aws` processes, at most MAX_AWS_PROCESSES at once), instead of more creates of its own.
    burst_in_concurrency: bool = False
    # Phase 2b's single-stop latency (the bulk stop's reference) is phase 2's counted stop (a single
    # POST /instances/{id}/stop on the same server), not stops of instances of its own.
    single_from_counts: bool = False
    # Phase 6 probes /health and samples RSS during its (one) timed sweep, instead of during one more sweep.
    probe_timed_sweep: bool = False
    # Phase 7's server adopts the tracked instances by its start-up sweep (waited for), not by one more sync.
    adopt_at_start: bool = False


FULL = Sizes("full", (10, 100, 1000), raw_samples=5, serial=8, burst=32, list_samples=100, get_samples=300,
             sweep_samples=3)
# The smallest sizes that still give every figure (each `aws` process is ~0.45 CPU-s: an API create is three
# with ssh_from "none", which the timed phases' creates ask for: its group, the launch, its sweep): one create per
# notification leg, the off leg being phase 1's create; the burst is phase 3's 2 concurrent creates, sampled (2 cannot
# reach the cap of 8, nor could a burst of 1 or 2 of its own: what the smoke checks there is that the sampler sees
# the `aws` processes and that the burst succeeds); 2 and 4 concurrent stops; phase 2b's batches adopted by one
# sweep, one second server (notifications only: no window-0 leg, a timing line) instead of two, and phase 7's
# PostgreSQL database starting with the first server's AMI catalogue (copied, as the SQLite servers' are). Phase 5
# does not empty the emulator: 25 tracked are the 16 the earlier phases leave (the counted create is terminated)
# and 9 seeded; a reset would cost a sweep and a delete-security-group for each
# earlier create's group, which the reset already removed. The window-0 leg (its sync and two stops with their
# sweeps) was five `aws` processes, a burst of its own three. The single stop (the bulk stop's reference, a timing
# line) is phase 2's counted stop (a stop and its sweep fewer); phase 6's one timed sweep runs under the /health
# probe and the RSS sampler (a sweep fewer; its timing is only reported); phase 7's server adopts by its start-up
# sweep (a sync fewer).
SMOKE = Sizes("smoke", (25,), raw_samples=1, serial=2, burst=1, list_samples=20, get_samples=20, sweep_samples=1,
              notify_samples=1, serial_leg=False, quiet_wait_s=0.0, few_stops=2, many_stops=4, stop_samples=1,
              share_catalog=True, create_ssh_from="none", adopt_at_once=True, one_second_server=True,
              off_from_phase1=True, reset_before_scale=False, window_leg=False, burst_in_concurrency=True,
              single_from_counts=True, probe_timed_sweep=True, adopt_at_start=True)


# -- processes, from /proc ------------------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        kids[ppid].append(int(entry.name))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0  # gone, or a zombie


def is_aws(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(Path(a.decode(errors="replace")).name == "aws" for a in argv[:2])


class Sampler(threading.Thread):
    """Every `interval` s: RSS of the server and of all its descendants, and how many are `aws`."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int, int]] = []  # (t, server rss, children rss, aws count)
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self._halt.is_set():
            kids = descendants(self.pid)
            self.samples.append((time.perf_counter() - t0, rss_bytes(self.pid), sum(map(rss_bytes, kids)),
                                 sum(map(is_aws, kids))))
            self._halt.wait(self.interval)

    def stop(self) -> dict:
        self._halt.set()
        self.join()
        peak = max(self.samples, key=lambda s: s[1] + s[2])
        return {"samples": len(self.samples), "peak_total_mib": round((peak[1] + peak[2]) / MIB, 1),
                "server_at_peak_mib": round(peak[1] / MIB, 1), "children_at_peak_mib": round(peak[2] / MIB, 1),
                "peak_server_mib": round(max(s[1] for s in self.samples) / MIB, 1),
                "max_concurrent_aws": max(s[3] for s in self.samples)}


def wait_idle(pid: int, quiet: float = 0.7, timeout: float = 300.0) -> None:
    """Until the server has had no child process for `quiet` s (its follow-up sweep included:
    a sweep is asked for before the response and starts BATCH_DELAY_SECONDS = 0.5 s later). Polled every
    0.1 s: each look scans all of /proc (~2.5 ms, more on a busy machine), and a run waits ~25 times."""
    deadline = time.monotonic() + timeout
    calm_since = time.monotonic()
    while time.monotonic() < deadline:
        if descendants(pid):
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            return
        time.sleep(0.1)
    raise RuntimeError(f"server {pid} still had child processes after {timeout} s")


# -- CPU: ours vs everybody else's (other jobs on the machine skew every timing) ----------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants, including their reaped children."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


class CpuMeter:
    """Busy CPU seconds spent outside this benchmark's process tree between two readings."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t, self.busy, self.ours = time.perf_counter(), machine_busy_s(), tree_cpu_s(os.getpid())

    def read(self) -> dict:
        t, busy, ours = time.perf_counter(), machine_busy_s(), tree_cpu_s(os.getpid())
        wall = max(t - self.t, 1e-6)
        foreign = max(0.0, (busy - self.busy) - (ours - self.ours))
        return {"wall_s": round(wall, 2), "ours_cpu_s": round(ours - self.ours, 2),
                "foreign_cpu_s": round(foreign, 2), "foreign_cores": round(foreign / wall, 2)}


def wait_quiet(max_wait: float, log, threshold: float = 0.15) -> dict:
    """Wait (up to max_wait s) until other processes use < threshold cores for 2 s in a row."""
    t0 = time.perf_counter()
    calm = 0
    last = {"foreign_cores": 0.0}
    while time.perf_counter() - t0 < max_wait:
        meter = CpuMeter()
        time.sleep(1.0)
        last = meter.read()
        calm = calm + 1 if last["foreign_cores"] < threshold else 0
        if calm >= 2:
            break
    waited = round(time.perf_counter() - t0, 1)
    if waited > 3:
        log(f"  waited {waited} s for other load to stop (last: {last['foreign_cores']} cores busy elsewhere)")
    return {"waited_s": waited, "foreign_cores_at_start": last["foreign_cores"]}


# -- the shim log ----------------------------------------------------------------------------------
def operation(argv: list[str]) -> str:
    """'describe-instances' from ['--output', 'json', ..., 'ec2', 'describe-instances', ...]."""
    words, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in GLOBAL_OPTS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
            if len(words) == 2:
                return words[1]
    return " ".join(words) or "?"


class CallLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def ops(self) -> list[str]:
        return [operation(json.loads(line)) for line in self.path.read_text().splitlines() if line.strip()]

    def mark(self) -> int:
        return len(self.ops())

    def since(self, mark: int) -> Counter:
        return Counter(self.ops()[mark:])


# -- stats -----------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def latency_summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": ms(pct(values, 50)), "p99_ms": ms(pct(values, 99)),
            "max_ms": ms(max(values))}


# -- the raw `aws` process -------------------------------------------------------------------------
def raw_aws(emulator_url: str, *args: str) -> float:
    """Time one `aws` process with the global options common.sh's aws_call passes."""
    env = safe_env(AWS_PAGER="", AWS_RETRY_MODE="standard", AWS_MAX_ATTEMPTS="3")
    argv = [str(AWS), "--output", "json", "--cli-connect-timeout", "5", "--cli-read-timeout", "30",
            "--endpoint-url", emulator_url, "--region", "us-east-1", *args]
    t0 = time.perf_counter()
    # stdout into a pipe, read to the end, as the server reads a script's output
    done = subprocess.run(argv, env=env, capture_output=True, timeout=300)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"aws {' '.join(args[:2])} failed: {done.stderr.decode()[-500:]}")
    return elapsed


def raw_run_instances(emulator_url: str, ami: str) -> float:
    tags = json.dumps([{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "bench-raw"}]}])
    devices = '[{"DeviceName":"/dev/xvda","Ebs":{"VolumeSize":8,"VolumeType":"gp3","DeleteOnTermination":true}}]'
    return raw_aws(emulator_url, "ec2", "run-instances", "--image-id", ami, "--instance-type", "t3.micro",
                   "--count", "1", "--key-name", KEY_NAME, "--block-device-mappings", devices,
                   "--tag-specifications", tags)


def raw_describe(emulator_url: str) -> float:
    return raw_aws(emulator_url, "ec2", "describe-instances", "--filters", MANAGED_FILTER)


# -- API helpers -----------------------------------------------------------------------------------
def create_body(i: int | str, ssh_from: str | None = None) -> dict:
    return {"name": f"bench-{i}", "ami": "amazon-linux-2023", "instance_type": "t3.micro",
            **({"ssh_from": ssh_from} if ssh_from else {})}


def timed(client: httpx.Client, method: str, url: str, **kw) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    response = client.request(method, url, **kw)
    return time.perf_counter() - t0, response


def expect(response: httpx.Response, *codes: int) -> httpx.Response:
    if response.status_code not in codes:
        raise RuntimeError(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                           f"{response.text[:500]}")
    return response


async def concurrent_creates(url: str, count: int, tag: str, probe_health: bool, ssh_from: str | None = None) -> dict:
    """`count` POST /instances at once; with probe_health, GET /health every 10 ms meanwhile."""
    limits = httpx.Limits(max_connections=count + 4, max_keepalive_connections=count + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        done = asyncio.Event()
        health: list[float] = []

        async def probe() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                expect(await client.get("/health"), 200)
                health.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)

        latencies: list[float] = []

        async def one(i: int) -> int:
            t_req = time.perf_counter()
            response = await client.post("/instances", json=create_body(f"{tag}-{i}", ssh_from))
            latencies.append(round(time.perf_counter() - t_req, 3))
            return response.status_code

        prober = asyncio.create_task(probe()) if probe_health else None
        t0 = time.perf_counter()
        codes = await asyncio.gather(*(one(i) for i in range(count)))
        wall = time.perf_counter() - t0
        done.set()
        if prober:
            await prober
    return {"wall_s": wall, "codes": dict(Counter(codes)), "health": health, "latencies": sorted(latencies)}


def admission_cost_ms(db_path: Path, copy: Path, samples: int = 50) -> dict:
    """What the budget check adds to a create, in server time: after a write (as a create's record is),
    the ledger re-reads the changed row and sums what is committed. Measured in this process on a copy
    of the server's database, so the running server is not disturbed."""
    import sqlite3

    from app.budget.spending import PriceBook, Spending, horizon
    from app.config import DEFAULT_PRICES_FILE
    from app.core import clock
    from app.core.clock import utcnow
    from app.store import Database

    with sqlite3.connect(db_path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    db = Database(copy)
    row = db.list_instances()[0]
    spending = Spending(1e9, PriceBook.load(DEFAULT_PRICES_FILE), db, row["region"] or "us-east-1",
                        row["endpoint"] or "")
    spending.committed()  # the first look reads everything, once per process
    times = []
    for i in range(samples):
        db.update_instance(row["id"], {"updated_at": utcnow(), "name": f"touched-{i}"})
        t0 = time.perf_counter()
        rates = spending.rates_for("t3.micro", 8)
        now = clock.now()
        spending.admit(None, rates.charges(now, now + timedelta(minutes=480), True, horizon(now)), "a create")
        times.append(time.perf_counter() - t0)
    return latency_summary(times)


# -- the run ---------------------------------------------------------------------------------------
class Bench:
    def __init__(self, sizes: Sizes, workdir: Path, log=print, postgres_url: str | None = None,
                 emulator_url: str | None = None) -> None:
        self.sizes, self.workdir, self.log = sizes, workdir, log
        self.postgres_url = postgres_url  # an empty database to use; None: start a private cluster
        self.emulator_url = emulator_url  # a running moto server to use; None: start one
        self.results: dict = {"profile": sizes.name, "sizes": asdict(sizes)}
        self.second: ApiServer | None = None  # one_second_server: phase 1b's server, kept for the window's cost
        self.batches: dict[str, list[str]] = {}  # adopt_at_once: phase 2b's instances, by batch, not handed out yet
        self.request_s: dict[str, float] = {}  # phase 2: each counted request's latency

    def body(self, i: int | str) -> dict:
        """A create of a timed phase (1, 1b, 3, 4)."""
        return create_body(i, self.sizes.create_ssh_from)

    def run(self) -> dict:
        t_start = time.perf_counter()
        self.results["machine"] = machine_info()
        self.emu = Emulator(self.workdir, self.emulator_url)
        try:
            self.emu.reset()
            self.ami = self.emu.ami()
            if not self.emulator_url:  # one that has served a session is warm
                self.log("warming the emulator (its first EC2 call is slow)")
                raw_describe(self.emu.url)
            self.server = ApiServer(self.workdir, self.emu.url, RECONCILE_INTERVAL_SECONDS="3600",
                                    # The emulator is reset before phase 5 (full sizes): what it forgot is gone at once.
                                    CONSISTENCY_GRACE_SECONDS="0", GONE_AFTER_MISSED_SWEEPS="1")
            try:
                self.calls = CallLog(self.server.shim_log)
                self.pid = self.server.proc.pid
                self.client = httpx.Client(base_url=self.server.url, timeout=600)
                wait_idle(self.pid)  # the AMI catalogue warms at start (its `aws` calls) and the first sweep
                self.results["startup_aws_calls"] = dict(self.calls.since(0))
                if self.sizes.share_catalog:
                    share_catalog(self.server.db_path, self.workdir / "catalog-template.db", self.emu.url)
                self.results["memory"] = {"server_idle_mib": round(rss_bytes(self.pid) / MIB, 1)}
                for phase in (self.phase_raw_and_create_latency, self.phase_notifications, self.phase_process_counts,
                              self.phase_coalescing, self.phase_concurrency, self.phase_burst, self.phase_scale,
                              self.phase_sweep, self.phase_postgres):
                    self.timed_phase(phase)
            finally:
                if self.second:
                    self.second.stop()
                self.server.stop()
        finally:
            self.emu.close()
        self.results["duration_s"] = round(time.perf_counter() - t_start, 1)
        self.results["checks"] = checks(self.results)
        return self.results

    def timed_phase(self, phase) -> None:
        """Run one phase, recording how much CPU other processes on the machine took meanwhile."""
        name = phase.__name__.removeprefix("phase_")
        quiet = wait_quiet(self.sizes.quiet_wait_s, self.log) if self.sizes.quiet_wait_s else {}
        meter = CpuMeter()
        phase()
        self.results.setdefault("machine_load", {})[name] = {**quiet, **meter.read()}

    # 1 ------------------------------------------------------------------------------------------
    def phase_raw_and_create_latency(self) -> None:
        self.log("phase 1: raw aws processes vs POST /instances")
        raw_run, raw_desc, api = [], [], []
        for i in range(self.sizes.raw_samples):
            raw_desc.append(raw_describe(self.emu.url))
            raw_run.append(raw_run_instances(self.emu.url, self.ami))
            elapsed, response = timed(self.client, "POST", "/instances", json=self.body(f"lat-{i}"))
            expect(response, 201)
            api.append(elapsed)
            wait_idle(self.pid)
        self.results["raw"] = {
            "describe_instances_s": [round(x, 3) for x in raw_desc],
            "run_instances_s": [round(x, 3) for x in raw_run],
            "describe_instances_median_s": round(statistics.median(raw_desc), 3),
            "run_instances_median_s": round(statistics.median(raw_run), 3),
        }
        self.results["create_latency"] = {
            "api_s": [round(x, 3) for x in api],
            "api_median_s": round(statistics.median(api), 3),
            "ratio_to_raw_run_instances": round(statistics.median(api) / statistics.median(raw_run), 3),
        }

    # 1b -----------------------------------------------------------------------------------------
    def phase_notifications(self) -> None:
        """A create with notifications on (mail to a real SMTP server, a json:// webhook) against one
        with them off, interleaved on the same emulator: the create only writes the event; sending runs
        in the background, so the two should cost the same."""
        self.log("phase 1b: POST /instances with notifications off and on")
        mail, hook = MailServer().start(), WebhookReceiver().start()
        workdir = self.workdir / "notify"
        workdir.mkdir(exist_ok=True)
        # Only creates notify: the two servers share the emulator, so each adopts the other's instances.
        window0 = {"TRANSITION_WINDOW_MS": "0"} if self.sizes.one_second_server else {}
        server = ApiServer(workdir, self.emu.url, RECONCILE_INTERVAL_SECONDS="3600", NOTIFY_URLS=hook.url(),
                           NOTIFY_EVENTS="create", **mail.settings(), **window0)
        try:
            with httpx.Client(base_url=server.url, timeout=600) as on:
                warm = not self.sizes.share_catalog  # a copy of the first server's catalogue is warm already
                if warm:
                    expect(on.post("/instances", json=create_body("notify-warm")), 201)  # its catalogue, warm
                wait_idle(server.proc.pid)
                off_s, on_s = [], []
                for i in range(self.sizes.notify_samples):
                    if self.sizes.off_from_phase1:
                        off_s.append(self.results["create_latency"]["api_s"][i])
                    else:
                        elapsed, response = timed(self.client, "POST", "/instances", json=self.body(f"off-{i}"))
                        expect(response, 201)
                        off_s.append(elapsed)
                        wait_idle(self.pid)
                    elapsed, response = timed(on, "POST", "/instances", json=self.body(f"on-{i}"))
                    expect(response, 201)
                    on_s.append(elapsed)
                    wait_idle(server.proc.pid)
                creates = self.sizes.notify_samples + warm
                wait_for(lambda: len(mail.messages), creates, timeout=60)
                wait_for(lambda: len(hook.posts), creates, timeout=60)
                time.sleep(2)  # and no more than that
        finally:
            if self.sizes.one_second_server and self.sizes.window_leg:
                self.second = server  # its stops are the window-0 leg of phase 2b (window_cost); it stops there
            else:
                server.stop()
            mail.stop()
            hook.stop()
        self.results["notifications"] = {
            "off_s": [round(x, 3) for x in off_s], "on_s": [round(x, 3) for x in on_s],
            "off_median_s": round(statistics.median(off_s), 3), "on_median_s": round(statistics.median(on_s), 3),
            "ratio_on_to_off": round(statistics.median(on_s) / statistics.median(off_s), 3),
            "creates": creates, "mails": len(mail.messages), "webhooks": len(hook.posts),
        }

    # 2 ------------------------------------------------------------------------------------------
    def phase_process_counts(self) -> None:
        self.log("phase 2: aws processes per API operation")
        counts: dict[str, dict] = {}

        def measure(name: str, method: str, path: str, *codes: int, **kw) -> httpx.Response:
            mark = self.calls.mark()
            elapsed, response = timed(self.client, method, path, **kw)
            expect(response, *codes)
            self.request_s[name] = elapsed
            wait_idle(self.pid)
            ops = self.calls.since(mark)
            counts[name] = {"total": sum(ops.values()), "mutating": sum(n for op, n in ops.items() if op in MUTATING),
                            "describe_instances": ops.get("describe-instances", 0),
                            "ssh_group": sum(n for op, n in ops.items() if op in SSH_GROUP), "by_operation": dict(ops)}
            return response

        iid = measure("create", "POST", "/instances", 201, json=create_body("count")).json()["id"]
        measure("get", "GET", f"/instances/{iid}", 200)
        measure("list", "GET", "/instances", 200)
        measure("stop", "POST", f"/instances/{iid}/stop", 202)
        state = expect(self.client.get(f"/instances/{iid}"), 200).json()["state"]
        if state != "stopped":
            raise RuntimeError(f"after stop and its follow-up sweep the instance is {state}, not stopped")
        measure("start", "POST", f"/instances/{iid}/start", 202)
        measure("delete", "DELETE", f"/instances/{iid}", 202)
        self.results["aws_processes_per_operation"] = counts

    # 2b -----------------------------------------------------------------------------------------
    def adopted(self, count: int, tag: str) -> list[str]:
        """`count` running instances tagged ManagedBy (made in the emulator directly, adopted by one sweep);
        with adopt_at_once, those of a batch that adopt_batches made already."""
        if tag in self.batches:
            return self.batches.pop(tag)
        return self.adopt_batches({tag: count})[tag]

    def adopt_batches(self, batches: dict[str, int]) -> dict[str, list[str]]:
        """For each tag, that many running instances tagged ManagedBy and Batch=tag, all adopted by one sweep."""
        made = {}
        for tag, count in batches.items():
            tags = [{"Key": "ManagedBy", "Value": "ec2-creator-local"}, {"Key": "Batch", "Value": tag}]
            made[tag] = [i["InstanceId"] for i in self.emu.ec2.run_instances(
                ImageId=self.ami, InstanceType="t3.micro", MinCount=count, MaxCount=count, KeyName=KEY_NAME,
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"]]
        expect(self.client.post("/instances/sync"), 200)
        wait_idle(self.pid)
        return made

    def stop_all(self, ids: list[str]) -> tuple[float, Counter, dict]:
        """POST /instances/{id}/stop for every id at once: wall, aws processes, answers."""
        mark = self.calls.mark()

        async def run() -> tuple[float, list[int]]:
            limits = httpx.Limits(max_connections=len(ids) + 4, max_keepalive_connections=len(ids) + 4)
            async with httpx.AsyncClient(base_url=self.server.url, timeout=600, limits=limits) as client:
                t0 = time.perf_counter()
                answers = await asyncio.gather(*(client.post(f"/instances/{i}/stop") for i in ids))
                return time.perf_counter() - t0, [a.status_code for a in answers]

        wall, codes = asyncio.run(run())
        wait_idle(self.pid)
        return wall, self.calls.since(mark), dict(Counter(codes))

    def phase_coalescing(self) -> None:
        """Transitions of one kind that arrive together go out as one `aws` process (TRANSITION_WINDOW_MS);
        POST /instances/actions sends a whole set in one."""
        few, many = self.sizes.few_stops, self.sizes.many_stops
        self.log(f"phase 2b: {few} and {many} concurrent stops, a bulk stop of {many} by tag, single stops")
        single_n = 0 if self.sizes.single_from_counts else self.sizes.stop_samples + 1
        self.batches = self.adopt_batches({"stops-few": few, "stops-many": many, "bulk": many,
                                           **({"single": single_n} if single_n else {}),
                                           **({"window": 2 * self.sizes.stop_samples} if self.sizes.window_leg
                                              else {})}) if self.sizes.adopt_at_once else {}
        result: dict = {}
        for n, name in ((few, "few"), (many, "many")):
            ids = self.adopted(n, f"stops-{name}")
            wall, ops, codes = self.stop_all(ids)
            if codes != {202: n}:
                raise RuntimeError(f"{n} concurrent stops answered {codes}")
            result[f"{name}_concurrent_stops"] = {"n": n, "wall_s": round(wall, 3),
                                                  "stop_processes": ops.get("stop-instances", 0)}
        ids = self.adopted(many, "bulk")
        single_ids = [] if self.sizes.single_from_counts else self.adopted(self.sizes.stop_samples + 1, "single")
        singles = [self.request_s["stop"]] if self.sizes.single_from_counts else []
        for instance_id in single_ids[1:]:
            elapsed, response = timed(self.client, "POST", f"/instances/{instance_id}/stop")
            expect(response, 202)
            singles.append(elapsed)
            wait_idle(self.pid)
        mark = self.calls.mark()
        elapsed, response = timed(self.client, "POST", "/instances/actions",
                                  json={"action": "stop", "selector": {"tag": {"Batch": "bulk"}}})
        results = expect(response, 200).json()["results"]
        wait_idle(self.pid)
        if sorted(r["id"] for r in results if r["status"] == 202) != sorted(ids):
            raise RuntimeError(f"the bulk stop answered {Counter(r['status'] for r in results)}")
        single = statistics.median(singles)
        result["bulk_stop"] = {"n": many, "wall_s": round(elapsed, 3),
                               "stop_processes": self.calls.since(mark).get("stop-instances", 0),
                               "single_stop_median_s": round(single, 3),
                               "ratio_to_single_stop": round(elapsed / single, 3)}
        window = self.window_cost() if self.sizes.window_leg else {}
        result["single_stop"] = {"samples_s": [round(x, 3) for x in singles], **window}
        self.results["coalescing"] = result

    def window_cost(self) -> dict:
        """Single-stop latency with the default window against a server with TRANSITION_WINDOW_MS=0, interleaved."""
        workdir = self.workdir / "window0"
        workdir.mkdir(exist_ok=True)
        server = self.second or ApiServer(workdir, self.emu.url, RECONCILE_INTERVAL_SECONDS="3600",
                                          TRANSITION_WINDOW_MS="0")
        self.second = None
        with_window, without = [], []
        try:
            with httpx.Client(base_url=server.url, timeout=600) as zero:
                ids = self.adopted(2 * self.sizes.stop_samples, "window")
                expect(zero.post("/instances/sync"), 200)
                wait_idle(server.proc.pid)
                for k in range(self.sizes.stop_samples):
                    elapsed, response = timed(self.client, "POST", f"/instances/{ids[2 * k]}/stop")
                    expect(response, 202)
                    with_window.append(elapsed)
                    wait_idle(self.pid)
                    elapsed, response = timed(zero, "POST", f"/instances/{ids[2 * k + 1]}/stop")
                    expect(response, 202)
                    without.append(elapsed)
                    wait_idle(server.proc.pid)
        finally:
            server.stop()
        added = statistics.median(with_window) - statistics.median(without)
        return {"window_ms": 25, "with_window_median_s": round(statistics.median(with_window), 3),
                "without_window_median_s": round(statistics.median(without), 3), "added_ms": round(added * 1000, 1)}

    # 3 ------------------------------------------------------------------------------------------
    def phase_concurrency(self) -> None:
        n = self.sizes.serial
        result: dict = {"creates": n}
        if self.sizes.serial_leg:
            self.log(f"phase 3: {n} serial creates, {n} concurrent, then {n} concurrent with /health probed")
            serials, concurrents = [], []
            for r in range(self.sizes.concurrency_rounds):
                if r and self.sizes.quiet_wait_s:
                    wait_quiet(self.sizes.quiet_wait_s / 2, self.log)
                t0 = time.perf_counter()
                for i in range(n):
                    expect(self.client.post("/instances", json=self.body(f"serial-{r}-{i}")), 201)
                serials.append(time.perf_counter() - t0)
                wait_idle(self.pid)
                plain = asyncio.run(concurrent_creates(self.server.url, n, f"conc-{r}", probe_health=False,
                                                   ssh_from=self.sizes.create_ssh_from))
                if plain["codes"] != {201: n}:
                    raise RuntimeError(f"concurrent creates answered {plain['codes']}")
                concurrents.append(plain["wall_s"])
                wait_idle(self.pid)
            serial, conc = statistics.median(serials), statistics.median(concurrents)
            result |= {"serial_wall_s": round(serial, 3), "concurrent_wall_s": round(conc, 3),
                       "serial_rounds_s": [round(x, 3) for x in serials],
                       "concurrent_rounds_s": [round(x, 3) for x in concurrents],
                       "ratio_concurrent_to_serial": round(conc / serial, 3)}
        else:
            self.log(f"phase 3: {n} concurrent creates with /health probed")
        mark = self.calls.mark()
        sampler = Sampler(self.pid) if self.sizes.burst_in_concurrency else None
        if sampler:
            sampler.start()
        run = asyncio.run(concurrent_creates(self.server.url, n, "probed", probe_health=True,
                                             ssh_from=self.sizes.create_ssh_from))
        wait_idle(self.pid)
        ops = self.calls.since(mark)
        if sampler:
            self.record_burst(n, run, sampler.stop())
        if run["codes"] != {201: n}:
            raise RuntimeError(f"concurrent creates answered {run['codes']}")
        self.results["concurrency"] = result | {
            "probed_concurrent_wall_s": round(run["wall_s"], 3), "create_latencies_s": run["latencies"],
            "aws_processes": dict(ops), "describe_instances": ops.get("describe-instances", 0),
            "health_during_creates": latency_summary(run["health"]),
        }

    # 4 ------------------------------------------------------------------------------------------
    def phase_burst(self) -> None:
        if self.sizes.burst_in_concurrency:
            return  # phase 3 recorded it
        n = self.sizes.burst
        self.log(f"phase 4: burst of {n} concurrent creates, RSS sampled every 50 ms")
        sampler = Sampler(self.pid)
        sampler.start()
        run = asyncio.run(concurrent_creates(self.server.url, n, "burst", probe_health=False,
                                             ssh_from=self.sizes.create_ssh_from))
        wait_idle(self.pid)
        self.record_burst(n, run, sampler.stop())

    def record_burst(self, n: int, run: dict, memory: dict) -> None:
        self.results["burst"] = {"creates": n, "codes": run["codes"], "succeeded": run["codes"].get(201, 0),
                                 "wall_s": round(run["wall_s"], 3), **memory}

    # 5 + 6 --------------------------------------------------------------------------------------
    def tracked(self) -> list[dict]:
        return expect(self.client.get("/instances"), 200).json()["instances"]

    def sync(self) -> tuple[float, dict]:
        elapsed, response = timed(self.client, "POST", "/instances/sync")
        return elapsed, expect(response, 200).json()

    def phase_scale(self) -> None:
        sizes = " / ".join(f"{n:,}" for n in self.sizes.tracked)
        if self.sizes.reset_before_scale:
            self.log(f"phase 5: emptying the emulator, then {sizes} tracked instances")
            self.emu.reset()
            self.sync()
            if self.tracked():
                raise RuntimeError("instances still listed after the emulator was reset and a sweep ran")
        else:
            self.log(f"phase 5: {sizes} tracked instances, the earlier phases' included")
        scale: dict[str, dict] = {}
        for n in self.sizes.tracked:
            have = len(self.tracked())
            seeded, adopt_s, adopted, ops = 0.0, 0.0, {}, Counter()
            if n > have:
                t0 = time.perf_counter()
                self.emu.ec2.run_instances(
                    ImageId=self.ami, InstanceType="t3.micro", MinCount=n - have, MaxCount=n - have,
                    TagSpecifications=[{"ResourceType": "instance",
                                        "Tags": [MANAGED_TAG, {"Key": "Name", "Value": f"seed-{n}"}]}])
                seeded = time.perf_counter() - t0
                mark = self.calls.mark()
                adopt_s, adopted = self.sync()
                ops = self.calls.since(mark)
            listed = self.tracked()
            if len(listed) != n:
                raise RuntimeError(f"{len(listed)} instances listed, {n} expected")
            self.log(f"  {n} tracked (seeded in {seeded:.1f} s, adopted by one sweep in {adopt_s:.1f} s)")
            wait_idle(self.pid)
            quiet = wait_quiet(self.sizes.quiet_wait_s, self.log) if self.sizes.quiet_wait_s else {}
            meter = CpuMeter()
            ids = [i["id"] for i in listed]
            lists, gets = [], []
            for _ in range(self.sizes.list_samples):
                elapsed, response = timed(self.client, "GET", "/instances")
                expect(response, 200)
                lists.append(elapsed)
            list_bytes = len(response.content)
            budgets = []
            for _ in range(self.sizes.list_samples):
                elapsed, response = timed(self.client, "GET", "/budget")
                expect(response, 200)
                budgets.append(elapsed)
            if len(response.json()["instances"]) < n:  # and the earlier phases' ones, spent this month
                raise RuntimeError(f"GET /budget lists {len(response.json()['instances'])} instances, {n} expected")
            mark_reads = self.calls.mark()
            pages = []  # the dashboard's instances page (its first page of rows, the spend banner)
            for _ in range(self.sizes.list_samples):
                elapsed, response = timed(self.client, "GET", "/ui")
                expect(response, 200)
                pages.append(elapsed)
            if response.text.count("data-instance-id=") < min(n, 200):
                raise RuntimeError("the dashboard's instances page shows fewer rows than expected")
            for k in range(self.sizes.get_samples):
                elapsed, response = timed(self.client, "GET", f"/instances/{ids[(k * 7919) % len(ids)]}")
                expect(response, 200)
                gets.append(elapsed)
            scale[str(n)] = {
                "adopt_sweep_s": round(adopt_s, 3), "adopted": len(adopted.get("adopted", [])),
                "adopt_sweep_aws_processes": dict(ops), "seed_s": round(seeded, 3),
                "list": latency_summary(lists), "get": latency_summary(gets), "budget": latency_summary(budgets),
                "ui_page": latency_summary(pages),
                "admission_ms": admission_cost_ms(self.server.db_path, self.workdir / f"ledger-{n}.db"),
                "list_response_bytes": list_bytes,
                "reads_aws_processes": sum(self.calls.since(mark_reads).values()),
                "server_rss_mib": round(rss_bytes(self.pid) / MIB, 1),
                "machine_load_during_reads": {**quiet, **meter.read()},
            }
        self.results["scale"] = scale
        top = self.sizes.tracked[-1]
        self.results["memory"]["server_tracked_n"] = top
        self.results["memory"]["server_tracked_mib"] = scale[str(top)]["server_rss_mib"]

    def phase_sweep(self) -> None:
        """Timed sweeps run bare (no sampler, no prober: their CPU would land in the timing on 2 cores);
        one more sweep, not timed, runs under /health probes and the RSS sampler."""
        n = self.sizes.tracked[-1]
        self.log(f"phase 6: one sweep vs one raw describe-instances, {n} instances")
        raws, sweeps, procs = [], [], []
        stop = threading.Event()
        health: list[float] = []

        def probe() -> None:
            with httpx.Client(base_url=self.server.url, timeout=60) as c:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    expect(c.get("/health"), 200)
                    health.append(time.perf_counter() - t0)
                    stop.wait(0.02)

        def probed() -> tuple[Sampler, threading.Thread]:
            sampler = Sampler(self.pid)
            sampler.start()
            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            return sampler, prober

        watch = None
        for k in range(self.sizes.sweep_samples):
            if self.sizes.quiet_wait_s:
                wait_quiet(self.sizes.quiet_wait_s / 2, self.log)
            raws.append(raw_describe(self.emu.url))
            wait_idle(self.pid)
            if self.sizes.probe_timed_sweep and k == self.sizes.sweep_samples - 1:
                watch = probed()  # the last timed sweep is also the probed one
            mark = self.calls.mark()
            elapsed, result = self.sync()
            sweeps.append(elapsed)
            procs.append(sum(self.calls.since(mark).values()))
            if any(result.values()):
                raise RuntimeError(f"a steady-state sweep changed something: {result}")
        if watch is None:
            wait_idle(self.pid)
            watch = probed()
            mark = self.calls.mark()
            probed_s, _ = self.sync()
            procs.append(sum(self.calls.since(mark).values()))
        else:
            probed_s = sweeps[-1]
        sampler, prober = watch
        stop.set()
        prober.join()
        memory = sampler.stop()
        self.results["sweep"] = {
            "instances": n, "sweep_s": [round(x, 3) for x in sweeps], "raw_describe_s": [round(x, 3) for x in raws],
            "sweep_median_s": round(statistics.median(sweeps), 3),
            "raw_describe_median_s": round(statistics.median(raws), 3),
            "ratio_to_raw_describe": round(statistics.median(sweeps) / statistics.median(raws), 3),
            "aws_processes_per_sweep": max(procs), "probed_sweep_s": round(probed_s, 3),
            "health_during_sweep": latency_summary(health or [0.0]),
            "health_max_during_sweep_ms": ms(max(health, default=0.0)),
            "server_peak_rss_during_sweep_mib": memory["peak_server_mib"],
        }
        self.results["memory"]["server_peak_during_sweep_mib"] = memory["peak_server_mib"]

    # 7 ------------------------------------------------------------------------------------------
    def phase_postgres(self) -> None:
        """The reads once more on PostgreSQL: a second server on a private cluster (tests/support/postgres.py),
        over the same EC2; its first sweep adopts the instances phase 5 left."""
        n = self.sizes.tracked[-1]
        self.log(f"phase 7: GET /instances and GET /instances/{{id}} at {n} tracked, on PostgreSQL")
        cluster = None if self.postgres_url else PgCluster.start()
        try:
            workdir = self.workdir / "postgres"
            workdir.mkdir()
            url = self.postgres_url or cluster.new_database()
            template = CATALOG_TEMPLATES.get(self.emu.url)
            if self.sizes.share_catalog and template:
                # The first server's AMI catalogue, as the SQLite servers start with it (four `aws` processes).
                from app.store.copy import copy_store

                copy_store(str(template), url)
            server = ApiServer(workdir, self.emu.url, DATABASE_URL=url, RECONCILE_INTERVAL_SECONDS="3600",
                               CONSISTENCY_GRACE_SECONDS="0")
            try:
                calls = CallLog(server.shim_log)
                with httpx.Client(base_url=server.url, timeout=600) as client:
                    if self.sizes.adopt_at_start:  # its start-up sweep adopts them: wait for it
                        deadline = time.monotonic() + 60
                        while (len(expect(client.get("/instances"), 200).json()["instances"]) < n
                               and time.monotonic() < deadline):
                            time.sleep(0.1)
                    else:
                        expect(client.post("/instances/sync"), 200)
                    ids = [i["id"] for i in expect(client.get("/instances"), 200).json()["instances"]]
                    if len(ids) != n:
                        raise RuntimeError(f"{len(ids)} instances listed on PostgreSQL, {n} expected")
                    wait_idle(server.proc.pid)
                    mark = calls.mark()
                    lists, gets = [], []
                    for _ in range(self.sizes.list_samples):
                        elapsed, response = timed(client, "GET", "/instances")
                        expect(response, 200)
                        lists.append(elapsed)
                    for k in range(self.sizes.get_samples):
                        elapsed, response = timed(client, "GET", f"/instances/{ids[(k * 7919) % len(ids)]}")
                        expect(response, 200)
                        gets.append(elapsed)
                    self.results["postgres"] = {
                        "tracked": n, "list": latency_summary(lists), "get": latency_summary(gets),
                        "reads_aws_processes": sum(calls.since(mark).values()),
                        "server_rss_mib": round(rss_bytes(server.proc.pid) / MIB, 1),
                    }
            finally:
                server.stop()
        finally:
            if cluster:
                cluster.stop()


def share_catalog(db_path: Path, template: Path, emulator_url: str) -> None:
    """Make the AMI catalogue in db_path (a warm server's SQLite database) the one every later ApiServer on this
    emulator starts with (tests/support/server.py CATALOG_TEMPLATES): a copy of it with nothing else kept."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(db_path)) as source, closing(sqlite3.connect(template)) as copy:
        source.backup(copy)
        copy.executescript("DELETE FROM instances; DELETE FROM instance_events; DELETE FROM launches; "
                           "DELETE FROM kv WHERE key NOT LIKE 'catalog_resolved_at:%' "
                           "AND key NOT LIKE 'aws_cli_version:%';")
    CATALOG_TEMPLATES[emulator_url] = template


def machine_info() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    version = subprocess.run([str(AWS), "--version"], capture_output=True, text=True, env=safe_env())
    import moto

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "?"

    commit = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in app/" if git("status", "--porcelain",
                                                                                            "--", "app") else "")
    return {"commit": commit,"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "mem_total_mib": int(Path("/proc/meminfo").read_text().split()[1]) // 1024,
            "aws_cli_version": (version.stdout or version.stderr).strip(), "python": platform.python_version(),
            "moto": moto.__version__, "kernel": platform.release(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# -- budget ----------------------------------------------------------------------------------------
def checks(r: dict) -> list[dict]:
    """Each budget line: value, limit, pass. kind 'count' lines are deterministic (the smoke asserts
    them); 'timing' and 'memory' lines depend on the machine and are only reported."""
    out: list[dict] = []

    def add(name: str, kind: str, value, limit: str, ok: bool) -> None:
        out.append({"name": name, "kind": kind, "value": value, "budget": limit, "pass": bool(ok)})

    per_op = r["aws_processes_per_operation"]
    for op in ("get", "list"):
        add(f"{op}: aws processes", "count", per_op[op]["total"], "= 0", per_op[op]["total"] == 0)
    for n, s in r["scale"].items():
        add(f"reads at {n} tracked: aws processes", "count", s["reads_aws_processes"], "= 0",
            s["reads_aws_processes"] == 0)
    for op in ("create", "start", "stop", "delete"):
        add(f"{op}: mutating aws processes", "count", per_op[op]["mutating"], "= 1", per_op[op]["mutating"] == 1)
        group = per_op[op].get("ssh_group", 0) if op in SSH_GROUP_BUDGET else 0
        if op in SSH_GROUP_BUDGET:
            add(f"{op}: its own SSH group's aws processes", "count", group, f"<= {SSH_GROUP_BUDGET[op]}",
                group <= SSH_GROUP_BUDGET[op])
        other = per_op[op]["total"] - per_op[op]["mutating"] - per_op[op]["describe_instances"] - group
        add(f"{op}: other aws processes (catalogue warm)", "count", other, "= 0", other == 0)
    co = r["coalescing"]
    few, many, bulk = co["few_concurrent_stops"], co["many_concurrent_stops"], co["bulk_stop"]
    add(f"bulk stop of {bulk['n']} by tag: aws processes", "count", bulk["stop_processes"], "= 1",
        bulk["stop_processes"] == 1)
    # How many requests share a call depends on when they arrive: timing lines, not counts.
    add(f"{few['n']} concurrent stops: aws processes", "timing", few["stop_processes"], "= 1",
        few["stop_processes"] == 1)
    add(f"{many['n']} concurrent stops: aws processes", "timing", many["stop_processes"], "<= 2",
        many["stop_processes"] <= 2)
    add(f"bulk stop of {bulk['n']} / one single stop (wall)", "timing", bulk["ratio_to_single_stop"], "<= 1.5",
        bulk["ratio_to_single_stop"] <= 1.5)
    single = co["single_stop"]
    if "added_ms" in single:  # the window-0 leg ran (not in the smoke)
        add("single stop: latency the window adds (ms)", "timing", single["added_ms"], f"<= {single['window_ms']}",
            single["added_ms"] <= single["window_ms"])
    c = r["concurrency"]
    add(f"{c['creates']} concurrent creates: describe-instances", "count", c["describe_instances"], "<= 2",
        c["describe_instances"] <= 2)
    sw = r["sweep"]
    add(f"sweep at {sw['instances']}: aws processes", "count", sw["aws_processes_per_sweep"], "= 1",
        sw["aws_processes_per_sweep"] == 1)
    for n, s in r["scale"].items():
        procs = sum(s["adopt_sweep_aws_processes"].values())
        add(f"adopting sweep to {n}: aws processes", "count", procs, "= 1", procs == 1)
    b = r["burst"]
    add(f"burst of {b['creates']}: creates that succeeded", "count", b["succeeded"], f"= {b['creates']}",
        b["succeeded"] == b["creates"])
    add(f"burst of {b['creates']}: most aws processes at once", "count", b["max_concurrent_aws"],
        f"<= {MAX_AWS_PROCESSES}", b["max_concurrent_aws"] <= MAX_AWS_PROCESSES)

    nt = r["notifications"]
    add(f"notifications on: mails and webhooks for {nt['creates']} creates", "count",
        [nt["mails"], nt["webhooks"]], f"= [{nt['creates']}, {nt['creates']}]",
        nt["mails"] == nt["webhooks"] == nt["creates"])
    add("API create with notifications on / off (median)", "timing", nt["ratio_on_to_off"], "<= 1.1",
        nt["ratio_on_to_off"] <= 1.1)

    h = c["health_during_creates"]
    add(f"/health p50 during {c['creates']} creates (ms)", "timing", h["p50_ms"], "<= 20", h["p50_ms"] <= 20)
    add(f"/health max during {c['creates']} creates (ms)", "timing", h["max_ms"], "<= 200", h["max_ms"] <= 200)
    if "ratio_concurrent_to_serial" in c:
        add(f"{c['creates']} concurrent / {c['creates']} serial creates", "timing", c["ratio_concurrent_to_serial"],
            "<= 0.6", c["ratio_concurrent_to_serial"] <= 0.6)
    ratio = r["create_latency"]["ratio_to_raw_run_instances"]
    add("API create / raw run-instances", "timing", ratio, "<= 1.15", ratio <= 1.15)
    top = str(max(int(k) for k in r["scale"]))
    lst, get = r["scale"][top]["list"], r["scale"][top]["get"]
    add(f"GET /instances p50 at {top} (ms)", "timing", lst["p50_ms"], "<= 30", lst["p50_ms"] <= 30)
    add(f"GET /instances/{{id}} p50 at {top} (ms)", "timing", get["p50_ms"], "<= 5", get["p50_ms"] <= 5)
    bud, adm = r["scale"][top]["budget"], r["scale"][top]["admission_ms"]
    add(f"GET /budget p50 at {top} (ms)", "timing", bud["p50_ms"], "<= 20", bud["p50_ms"] <= 20)
    page = r["scale"][top]["ui_page"]
    add(f"dashboard instances page (/ui) p50 at {top} (ms)", "timing", page["p50_ms"], "<= 100",
        page["p50_ms"] <= 100)
    add(f"budget check added to a create at {top}, p50 (ms)", "timing", adm["p50_ms"], "<= 1", adm["p50_ms"] <= 1)
    add(f"sweep / raw describe at {sw['instances']}", "timing", sw["ratio_to_raw_describe"], "<= 1.2",
        sw["ratio_to_raw_describe"] <= 1.2)
    pg = r["postgres"]
    add(f"reads at {pg['tracked']} tracked on PostgreSQL: aws processes", "count", pg["reads_aws_processes"], "= 0",
        pg["reads_aws_processes"] == 0)
    add(f"GET /instances p50 at {pg['tracked']} on PostgreSQL (ms)", "timing", pg["list"]["p50_ms"], "<= 30",
        pg["list"]["p50_ms"] <= 30)
    m = r["memory"]
    rss = max(m["server_tracked_mib"], m.get("server_peak_during_sweep_mib", 0))
    add(f"server RSS with {m['server_tracked_n']} tracked, incl. sweeps (MiB)", "memory", rss, "<= 150", rss <= 150)
    add(f"server + aws children, burst of {b['creates']} (MiB)", "memory", b["peak_total_mib"], "<= 1024",
        b["peak_total_mib"] <= 1024)
    return out


# -- report ----------------------------------------------------------------------------------------
def table(r: dict) -> str:
    raw, cl, c, b, sw, m = r["raw"], r["create_latency"], r["concurrency"], r["burst"], r["sweep"], r["memory"]
    rows = [
        ("raw `aws ec2 describe-instances` (few instances), median", f"{raw['describe_instances_median_s']:.3f} s"),
        ("raw `aws ec2 run-instances`, median", f"{raw['run_instances_median_s']:.3f} s"),
        ("API `POST /instances`, median", f"{cl['api_median_s']:.3f} s"),
        ("API create / raw run-instances", f"{cl['ratio_to_raw_run_instances']:.2f}"),
        ("API `POST /instances` with notifications off / on, median",
         f"{r['notifications']['off_median_s']:.3f} / {r['notifications']['on_median_s']:.3f} s "
         f"(ratio {r['notifications']['ratio_on_to_off']:.2f}; {r['notifications']['mails']} mails and "
         f"{r['notifications']['webhooks']} webhooks for {r['notifications']['creates']} creates)"),
    ]
    for op, v in r["aws_processes_per_operation"].items():
        detail = ", ".join(f"{k} {n}" for k, n in sorted(v["by_operation"].items())) or "none"
        rows.append((f"`aws` processes: {op}", f"{v['total']} ({detail})"))
    co = r["coalescing"]
    for key in ("few_concurrent_stops", "many_concurrent_stops"):
        rows.append((f"{co[key]['n']} concurrent `POST /instances/{{id}}/stop`",
                     f"{co[key]['stop_processes']} `stop-instances` process(es), wall {co[key]['wall_s']:.2f} s"))
    bs, ss = co["bulk_stop"], co["single_stop"]
    rows += [
        (f"`POST /instances/actions` stop of {bs['n']} by tag",
         f"{bs['stop_processes']} process, wall {bs['wall_s']:.2f} s ({bs['ratio_to_single_stop']:.2f}× one stop, "
         f"{bs['single_stop_median_s']:.3f} s)"),
    ]
    if "added_ms" in ss:
        rows.append(("single stop with the 25 ms window / without, median",
                     f"{ss['with_window_median_s']:.3f} / {ss['without_window_median_s']:.3f} s "
                     f"(adds {ss['added_ms']} ms)"))
    h = c["health_during_creates"]
    rows += [
        (f"/health during {c['creates']} concurrent creates p50 / p99 / max",
         f"{h['p50_ms']} / {h['p99_ms']} / {h['max_ms']} ms (n={h['n']})"),
    ]
    if "ratio_concurrent_to_serial" in c:
        rows += [
            (f"{c['creates']} serial creates, wall (median of rounds)",
             f"{c['serial_wall_s']:.2f} s {c['serial_rounds_s']}"),
            (f"{c['creates']} concurrent creates, wall (median of rounds)",
             f"{c['concurrent_wall_s']:.2f} s {c['concurrent_rounds_s']}"),
            ("concurrent / serial", f"{c['ratio_concurrent_to_serial']:.2f}"),
        ]
    rows += [
        (f"{c['creates']} concurrent creates with /health probed, wall", f"{c['probed_concurrent_wall_s']:.2f} s"),
        (f"describe-instances after {c['creates']} concurrent creates", str(c["describe_instances"])),
    ]
    for n, s in r["scale"].items():
        rows.append((f"GET /instances at {n}: p50 / p99", f"{s['list']['p50_ms']} / {s['list']['p99_ms']} ms"))
        rows.append((f"GET /instances/{{id}} at {n}: p50 / p99", f"{s['get']['p50_ms']} / {s['get']['p99_ms']} ms"))
        rows.append((f"GET /budget at {n}: p50 / p99", f"{s['budget']['p50_ms']} / {s['budget']['p99_ms']} ms"))
        rows.append((f"dashboard /ui at {n}: p50 / p99", f"{s['ui_page']['p50_ms']} / {s['ui_page']['p99_ms']} ms"))
        rows.append((f"budget check of a create at {n}: p50 / p99",
                     f"{s['admission_ms']['p50_ms']} / {s['admission_ms']['p99_ms']} ms"))
    pg = r["postgres"]
    rows.append((f"on PostgreSQL: GET /instances at {pg['tracked']}: p50 / p99",
                 f"{pg['list']['p50_ms']} / {pg['list']['p99_ms']} ms"))
    rows.append((f"on PostgreSQL: GET /instances/{{id}} at {pg['tracked']}: p50 / p99",
                 f"{pg['get']['p50_ms']} / {pg['get']['p99_ms']} ms"))
    rows += [
        (f"sweep at {sw['instances']} (POST /instances/sync), median", f"{sw['sweep_median_s']:.2f} s"),
        (f"raw describe-instances of the same {sw['instances']}, median", f"{sw['raw_describe_median_s']:.2f} s"),
        ("sweep / raw describe", f"{sw['ratio_to_raw_describe']:.2f}"),
        ("`aws` processes per sweep", str(sw["aws_processes_per_sweep"])),
        (f"/health during another sweep at {sw['instances']} p50 / p99 / max",
         f"{sw['health_during_sweep']['p50_ms']} / {sw['health_during_sweep']['p99_ms']} / "
         f"{sw['health_max_during_sweep_ms']} ms"),
        ("server RSS idle", f"{m['server_idle_mib']} MiB"),
        (f"server RSS with {m['server_tracked_n']} tracked (after reads)", f"{m['server_tracked_mib']} MiB"),
        (f"server RSS peak during a sweep at {sw['instances']}", f"{m.get('server_peak_during_sweep_mib')} MiB"),
        (f"burst of {b['creates']} creates: succeeded", f"{b['succeeded']} / {b['creates']} in {b['wall_s']:.1f} s"),
        (f"burst of {b['creates']}: peak server + children RSS",
         f"{b['peak_total_mib']} MiB (server {b['server_at_peak_mib']}, children {b['children_at_peak_mib']})"),
        (f"burst of {b['creates']}: most `aws` processes at once", str(b["max_concurrent_aws"])),
    ]
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {v}" for a, v in rows)


BOUNDS = """\
- **Raw `aws` process** (~1 s): Python start-up plus botocore loading its service models, then one
  HTTP call; on this emulator the call itself is a few ms. The CLI's start-up is the unit of cost.
- **Create latency**: one `create_instance.sh` (bash, then `aws ec2 run-instances`) plus the
  server's share: request parsing, two SQLite transactions (launch claim, record) in worker
  threads. Ideally the ratio to a raw `run-instances` is ~1.0; anything above is server overhead or
  a queue for a process slot (`MAX_AWS_PROCESSES`), or CPU taken by a follow-up sweep.
- **Processes per operation**: reads are answered from SQLite (0). A mutation is one script; its
  follow-up refresh is a request for a sweep, and requests arriving within the 0.5 s batch delay
  (and during a sweep) share one `describe-instances`.
- **/health under load**: the event loop is never blocked by a process (asyncio subprocesses), so
  /health is bounded by CPU scheduling: 8 `aws` processes share 2 cores with the server.
- **8 concurrent / 8 serial**: each `aws` is ~1 s of CPU, single-threaded; on 2 cores 8 of them
  cannot finish faster than ~8 × CPU / 2, so the floor of the ratio is ~0.5 plus the follow-up sweeps.
- **List / get**: since 59ed8a6 the list body is rendered once per change of the table (cached,
  keyed on a write generation) and served as bytes, so an unchanged list costs the same at 10 and
  1,000; one render is O(n) (~10 ms at 1,000). A get is one primary-key lookup in a worker thread.
- **Sweep**: one `describe-instances` of every ManagedBy instance (the emulator spends most of it
  rendering XML, the CLI parsing it), then one SQLite transaction comparing n rows. The server's
  share is parsing the CLI's JSON and the comparison.
- **Memory**: each `aws` is ~70 MiB RSS; `MAX_AWS_PROCESSES` (8) bounds the children at ~8 × 70 MiB;
  the server's own RSS grows with the largest describe answer it parses (a sweep at 1,000 is ~5 MB of
  JSON, i.e. tens of MiB of Python objects while it is applied).
"""


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Performance", "",
        "Generated by `make bench` (`bench/run_bench.py`); do not edit by hand: the findings section comes",
        "from `bench/FINDINGS.md`. Raw figures: `data/bench/results.json`.", "",
        "The unit of cost is one `aws` process. The benchmark runs against its own moto server and API",
        "server (fake credentials, 127.0.0.1 only), counts every `aws` process the server spawns through",
        "`tests/support/aws_shim.sh` (AWS_CLI), and samples RSS from /proc every 50 ms.", "",
        "## Machine", "",
        f"- CPUs: {m['cpus']} ({m['cpus_usable']} usable), {m['cpu_model']}; memory {m['mem_total_mib']} MiB",
        f"- AWS CLI: `{m['aws_cli_version']}`",
        f"- Python {m['python']}, moto {m['moto']}, kernel {m['kernel']}",
        f"- Run: {m['date']}, profile `{r['profile']}`, {r['duration_s']} s, app at commit "
        f"`{m.get('commit', '?')}`", "",
        "## Figures", "", "```", table(r), "```", "",
        "## Budget", "",
        "| Line | Kind | Value | Budget | Result |", "|---|---|---|---|---|",
    ]
    for c in r["checks"]:
        lines.append(f"| {c['name']} | {c['kind']} | {c['value']} | {c['budget']} | "
                     f"{'pass' if c['pass'] else '**MISS**'} |")
    lines += ["", "## Other load on the machine during each phase", "",
              "CPU used by processes outside the benchmark's tree (other jobs), from /proc/stat; the",
              "machine has 2 cores, so 0.5 cores elsewhere already skews a timing.", "",
              "| Phase | Wall s | Bench CPU s | Other CPU s | Other cores | Waited for quiet s |",
              "|---|---|---|---|---|---|"]
    for name, load in r.get("machine_load", {}).items():
        lines.append(f"| {name} | {load['wall_s']} | {load['ours_cpu_s']} | {load['foreign_cpu_s']} | "
                     f"{load['foreign_cores']} | {load.get('waited_s', '-')} |")
    lines += ["", "## What bounds each figure", "", BOUNDS]
    if FINDINGS.exists():
        lines += ["## Findings (profiled)", "", FINDINGS.read_text().strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes; check only process counts")
    parser.add_argument("--json", type=Path, help=f"results JSON (default {DEFAULT_JSON.relative_to(ROOT)}, "
                                                  "or results-smoke.json with --smoke)")
    parser.add_argument("--from-json", type=Path, help="run nothing: re-render the report (and the doc) from "
                                                       "this results JSON, e.g. after editing bench/FINDINGS.md")
    parser.add_argument("--quiet-wait", type=float, help="seconds to wait for other load to stop before each "
                                                          "timed phase (full default 120, smoke 0)")
    parser.add_argument("--postgres-url", help="run phase 7 on this empty PostgreSQL database (postgresql://...) "
                                                   "instead of a private cluster it starts and stops")
    parser.add_argument("--emulator-url", help="use this running moto server (http://127.0.0.1:PORT; it is reset) "
                                               "instead of starting one")
    parser.add_argument("--catalog-template", type=Path, help="with --emulator-url: a database holding that "
                                                               "emulator's AMI catalogue, which the servers start "
                                                               "with instead of fetching it (four `aws` processes)")
    parser.add_argument("--doc", type=Path, help=f"markdown report (full run default "
                                                 f"{DEFAULT_DOC.relative_to(ROOT)}; smoke writes none)")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.quiet_wait is not None:
        sizes = replace(sizes, quiet_wait_s=args.quiet_wait)
    out_json = args.json or (DEFAULT_JSON.with_name("results-smoke.json") if args.smoke else DEFAULT_JSON)
    out_doc = args.doc or (None if args.smoke else DEFAULT_DOC)

    def log(msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if args.from_json:
        results = json.loads(args.from_json.read_text())
        out_doc = args.doc or (DEFAULT_DOC if results["profile"] == "full" else None)
    else:
        with tempfile.TemporaryDirectory(prefix="ec2cl-bench-") as tmp:
            if args.catalog_template:
                if not args.emulator_url:
                    parser.error("--catalog-template needs --emulator-url")
                CATALOG_TEMPLATES[args.emulator_url] = args.catalog_template
            results = Bench(sizes, Path(tmp), log, args.postgres_url, args.emulator_url).run()
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=2) + "\n")
    if out_doc:
        out_doc.parent.mkdir(parents=True, exist_ok=True)
        out_doc.write_text(markdown(results))
    print(table(results))
    print()
    for c in results["checks"]:
        print(f"{'pass' if c['pass'] else 'MISS':4}  [{c['kind']:6}]  {c['name']}: {c['value']} (budget {c['budget']})")
    for name, load in results.get("machine_load", {}).items():
        if load["foreign_cores"] > 0.3:
            log(f"note: other processes used {load['foreign_cores']} cores during phase {name}: its timings are skewed")
    written = ([] if args.from_json else [str(out_json)]) + ([str(out_doc)] if out_doc else [])
    log(f"wrote {' and '.join(written) or 'nothing'}")
    failed_counts = [c for c in results["checks"] if c["kind"] == "count" and not c["pass"]]
    return 1 if failed_counts else 0


if __name__ == "__main__":
    sys.exit(main())
