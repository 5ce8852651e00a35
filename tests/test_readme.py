"""The README's curl tour, run as written against a real server and emulator."""

import json
import re
import subprocess

from tests.support.processes import ROOT, safe_env

README = (ROOT / "README.md").read_text()


def curl_tour() -> str:
    match = re.search(r"<!-- curl-tour:.*?-->\s*```bash\n(.*?)```", README, re.S)
    assert match, "README lost its curl tour block"
    return match.group(1)


def expected_statuses() -> list[str]:
    """The HTTP statuses the README shows after the tour, in order."""
    match = re.search(r"<!-- curl-tour-expected.*?-->\s*```text\n(.*?)```", README, re.S)
    assert match, "README lost the tour's expected output"
    return re.findall(r" (\d{3})$", match.group(1), re.M)


def test_curl_tour_creates_lists_stops_starts_and_deletes(api_server, fresh_emulator):
    script = curl_tour().replace("http://127.0.0.1:8000", api_server.url)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                          timeout=120, env=safe_env())
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith('{"status":"ok"} 200')
    instance_id = re.search(r"created (i-[0-9a-f]+)", out).group(1)
    answers = [re.fullmatch(r"(\{.*\}) (\d{3})", line) for line in out.splitlines() if line.startswith("{")]
    assert all(answers), out
    assert [a.group(2) for a in answers] == expected_statuses()  # what the README says it prints
    docs = [json.loads(a.group(1)) for a in answers]
    states = [d["state"] for d in docs if d.get("id") == instance_id]
    # get (running), stop, start, patch (auto-stop), patch (name and tags), delete
    assert states[0] == "running" and states[1] in ("stopping", "stopped")
    assert states[2] in ("pending", "running") and states[5] in ("shutting-down", "terminated")
    mine = [d for d in docs if d.get("id") == instance_id]
    assert mine[3]["auto_stop_minutes"] == 120 and mine[3]["stop_at"]
    assert mine[4]["name"] == "my-web-box" and mine[4]["tags"] == {"Team": "web"}
    filtered = next(d for d in docs if "instances" in d and d["instances"] and d["instances"][0].get("name") ==
                    "my-web-box")
    assert [i["id"] for i in filtered["instances"]] == [instance_id]
    metrics = next(d for d in docs if "datapoints" in d)
    assert (metrics["instance_id"], metrics["metric"], metrics["period"]) == (instance_id, "CPUUtilization", 300)
    budget = next(d for d in docs if "budget_usd" in d)
    assert instance_id in [i["id"] for i in budget["instances"]] and budget["committed_usd"] > 0
    assert docs[-1]["instances"][0]["id"] == instance_id
    ec2 = fresh_emulator.instances()[instance_id]
    assert ec2["State"]["Name"] == "terminated"
    tags = {t["Key"]: t["Value"] for t in ec2["Tags"]}
    assert tags["Team"] == "web" and tags["Name"] == "my-web-box" and "Owner" not in tags


def test_configuration_table_lists_every_setting():
    from app.config import Settings

    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in README, f"README configuration table misses {name.upper()}"


def test_make_help_shows_the_values_in_force():
    done = subprocess.run(["make", "--no-print-directory", "help", "PORT=9123", "HOST=0.0.0.0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Start the API on 0.0.0.0:9123" in done.stdout and "$(" not in done.stdout
