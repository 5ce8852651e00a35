#!/usr/bin/env python3
"""Profile the API server under one benchmark workload with py-spy (not a project dependency:
`.venv/bin/pip install py-spy`). Starts its own moto server and API server like run_bench.py.

    python bench/profile_server.py list --instances 1000      # GET /instances in a loop
    python bench/profile_server.py get --instances 1000       # GET /instances/{id} in a loop
    python bench/profile_server.py sweep --instances 1000     # POST /instances/sync in a loop
    python bench/profile_server.py creates --concurrency 8    # rounds of concurrent creates + /health

Writes py-spy's collapsed stacks to data/bench/profile-<workload>.txt (feed to flamegraph.pl or
speedscope) and prints the functions with the most samples, inclusive and self, plus the
latencies seen while profiling.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import run_bench as rb  # noqa: E402

from tests.support.emulator import Emulator  # noqa: E402
from tests.support.processes import VENV_BIN  # noqa: E402
from tests.support.server import ApiServer  # noqa: E402


def summarize(collapsed: Path, top: int) -> str:
    inclusive, own, total = Counter(), Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    out = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        out.append(f"-- top {top} by {title} samples --")
        out += [f"{n / max(total, 1):6.1%}  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["list", "get", "sweep", "creates"])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    out = rb.ROOT / "data" / "bench" / f"profile-{args.workload}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="ec2cl-prof-") as tmp:
        emu = Emulator(Path(tmp))
        server = None
        try:
            emu.reset()
            server = ApiServer(Path(tmp), emu.url, RECONCILE_INTERVAL_SECONDS="3600",
                               # The emulator is reset between phases: what it forgot is gone at once.
                               CONSISTENCY_GRACE_SECONDS="0", GONE_AFTER_MISSED_SWEEPS="1")
            pid = server.proc.pid
            rb.wait_idle(pid)
            client = httpx.Client(base_url=server.url, timeout=600)
            if args.workload != "creates" and args.instances:
                emu.ec2.run_instances(ImageId=emu.ami(), InstanceType="t3.micro", MinCount=args.instances,
                                      MaxCount=args.instances,
                                      TagSpecifications=[{"ResourceType": "instance", "Tags": [rb.MANAGED_TAG]}])
                rb.expect(client.post("/instances/sync"), 200)
                rb.wait_idle(pid)
            ids = [i["id"] for i in client.get("/instances").json()["instances"]]
            spy = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw",
                                    "--output", str(out), "--duration", str(int(args.seconds)), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)  # py-spy attaches
            latencies: list[float] = []
            health: list[float] = []
            deadline = time.monotonic() + args.seconds - 1.5
            k = 0
            while time.monotonic() < deadline:
                if args.workload == "list":
                    t, _ = rb.timed(client, "GET", "/instances")
                elif args.workload == "get":
                    t, _ = rb.timed(client, "GET", f"/instances/{ids[k % len(ids)]}")
                elif args.workload == "sweep":
                    t, _ = rb.timed(client, "POST", "/instances/sync")
                else:
                    run = asyncio.run(rb.concurrent_creates(server.url, args.concurrency, f"p{k}", True))
                    t = run["wall_s"]
                    health += run["health"]
                latencies.append(t)
                k += 1
            _, err = spy.communicate(timeout=120)
            if spy.returncode != 0:
                print(err.decode(errors="replace"), file=sys.stderr)
                return 1
        finally:
            if server:
                server.stop()
            emu.close()
    print(f"{args.workload}: {len(latencies)} rounds, {rb.latency_summary(latencies)}")
    if health:
        print(f"/health meanwhile: {rb.latency_summary(health)}")
    print(summarize(out, args.top))
    print(f"collapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
