"""Fault injection for the AWS_CLI shim: makes chosen `aws` calls behave the way EC2 misbehaves.

Rules come from the JSON file AWS_SHIM_FAULTS (a list, tried in order; the first whose `op` is an
argument, whose `match` strings all occur in the arguments and whose `unless` strings do not, applies;
`times` limits how often). A rule may:
  delay      seconds to sleep before anything else
  fail       {"stderr": "...", "code": 255}: answer like the CLI does when AWS refuses (no real call)
  fail_after the same, but after the real call went through (EC2 acted, then answered with an error)
  stdout     print this instead of the real answer (exit 0)
  hide       instance ids to drop from a describe-instances answer (EC2's eventual consistency);
             "all" drops every instance (an EC2 that has none, e.g. another account's)
  owner      the OwnerId every reservation of a describe-instances answer reports
  lock_db    {"path": db, "seconds": n}: after the real call, hold the SQLite write lock for n seconds
Everything else runs the real CLI (AWS_SHIM_REAL) with the same argv.
"""

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
open(sys.argv[2], "w").close()
time.sleep(float(sys.argv[3]))
conn.execute("ROLLBACK")
"""


def pick_rule(argv: list[str]) -> dict | None:
    path = Path(os.environ["AWS_SHIM_FAULTS"])
    with open(path, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        rules = json.loads(handle.read() or "[]")
        text = "\n".join(argv)
        for rule in rules:
            if rule.get("op") in argv and all(m in text for m in rule.get("match", [])) \
                    and not any(m in text for m in rule.get("unless", [])) and rule.get("times", 1) != 0:
                if "times" in rule:
                    rule["times"] -= 1
                    handle.seek(0)
                    handle.truncate()
                    handle.write(json.dumps(rules))
                return rule
    return None


def rewrite(output: str, rule: dict) -> str:
    doc = json.loads(output)
    ids = rule.get("hide") or []
    for reservation in doc.get("Reservations", []):
        reservation["Instances"] = [i for i in reservation["Instances"]
                                    if ids != "all" and i["InstanceId"] not in ids]
        if "owner" in rule:
            reservation["OwnerId"] = rule["owner"]
    doc["Reservations"] = [r for r in doc.get("Reservations", []) if r["Instances"]]
    return json.dumps(doc)


def hold_db_lock(path: str, seconds: float) -> None:
    ready = f"{path}.locked-{os.getpid()}"
    subprocess.Popen([sys.executable, "-c", LOCKER, path, ready, str(seconds)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(ready) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.unlink(ready)


def main(argv: list[str]) -> int:
    rule = pick_rule(argv) or {}
    time.sleep(rule.get("delay", 0))
    if "fail" in rule:
        sys.stderr.write("\n" + rule["fail"]["stderr"] + "\n")
        return rule["fail"].get("code", 255)
    if "stdout" in rule:
        sys.stdout.write(rule["stdout"])
        return 0
    done = subprocess.run([os.environ["AWS_SHIM_REAL"], *argv], capture_output=True, text=True)
    out = done.stdout
    if done.returncode == 0 and ("hide" in rule or "owner" in rule):
        out = rewrite(out, rule)
    if done.returncode == 0 and "fail_after" in rule:
        sys.stderr.write("\n" + rule["fail_after"]["stderr"] + "\n")
        return rule["fail_after"].get("code", 255)
    if done.returncode == 0 and "lock_db" in rule:
        hold_db_lock(rule["lock_db"]["path"], rule["lock_db"]["seconds"])
    sys.stdout.write(out)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
