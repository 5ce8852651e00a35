"""The README's curl tour, run as written against a real server and emulator."""

import json
import re
import subprocess

from tests.support.processes import ROOT, safe_env

README = (ROOT / "README.md").read_text()


def curl_tour() -> str:
    match = re.search(r"<!-- curl-tour.*?-->\s*```bash\n(.*?)```", README, re.S)
    assert match, "README lost its curl tour block"
    return match.group(1)


def test_curl_tour_creates_lists_stops_starts_and_deletes(api_server, fresh_emulator):
    script = curl_tour().replace("http://127.0.0.1:8000", api_server.url)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                          timeout=120, env=safe_env())
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith('{"status":"ok"}')
    instance_id = re.search(r"created (i-[0-9a-f]+)", out).group(1)
    docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    states = [d["state"] for d in docs if d.get("id") == instance_id]
    # get (running), stop, start, patch, delete
    assert states[0] == "running" and states[1] in ("stopping", "stopped")
    assert states[2] in ("pending", "running") and states[4] in ("shutting-down", "terminated")
    patched = [d for d in docs if d.get("id") == instance_id][3]
    assert patched["auto_stop_minutes"] == 120 and patched["stop_at"]
    budget = next(d for d in docs if "budget_usd" in d)
    assert instance_id in [i["id"] for i in budget["instances"]] and budget["committed_usd"] > 0
    assert docs[-1]["instances"][0]["id"] == instance_id
    ec2 = fresh_emulator.instances()[instance_id]
    assert ec2["State"]["Name"] == "terminated"
    assert {"Key": "Owner", "Value": "me"} in ec2["Tags"]


def test_configuration_table_lists_every_setting():
    from app.config import Settings

    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in README, f"README configuration table misses {name.upper()}"
