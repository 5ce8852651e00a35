"""The README (the guide) and docs/REFERENCE.md: their curl tours, run as written against a real server and
emulator, the guide's length, and the reference's settings table."""

import json
import re
import subprocess
from datetime import datetime

from tests.support.processes import ROOT, safe_env

README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "REFERENCE.md").read_text()


def curl_tour(text: str) -> str:
    match = re.search(r"<!-- curl-tour:.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert match, "lost its curl tour block"
    return match.group(1)


def expected_statuses(text: str) -> list[str]:
    """The HTTP statuses the document shows after its tour, in order."""
    match = re.search(r"<!-- curl-tour-expected.*?-->\s*```text\n(.*?)```", text, re.S)
    assert match, "lost the tour's expected output"
    return re.findall(r" (\d{3})$", match.group(1), re.M)


def run_tour(text: str, api_server) -> str:
    tour = curl_tour(text)
    # The address is set once, and every call goes through it.
    assert tour.startswith("API=http://127.0.0.1:8000\n") and tour.count("127.0.0.1:8000") == 1, tour
    script = tour.replace("http://127.0.0.1:8000", api_server.url)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                          timeout=120, env=safe_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_is_a_guide_of_at_most_150_lines_before_the_reference():
    lines = README.splitlines()
    reference = lines.index("## Reference")
    assert reference <= 150, f"the guide is {reference} lines before its Reference list"
    rest = lines[reference + 1:]
    # After it, links to docs/REFERENCE.md only: no more sections, no more blocks.
    assert not [line for line in rest if line.startswith(("#", "```"))], rest
    assert len(rest) <= 25, rest
    # GitHub's anchors: the heading in lower case, punctuation dropped, spaces as hyphens.
    anchors = {re.sub(r"[^a-z0-9_ -]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.*)$", REFERENCE, re.M)}
    for anchor in re.findall(r"\(docs/REFERENCE\.md#([a-z0-9_-]+)\)", README):
        assert anchor in anchors, f"README links docs/REFERENCE.md#{anchor}, which has no such heading"


def test_the_guides_tour_creates_waits_prints_ssh_stops_and_deletes(api_server, fresh_emulator):
    out = run_tour(README, api_server)
    assert out.startswith('{"status":"ok"} 200')
    instance_id = re.search(r"created (i-[0-9a-f]+)", out).group(1)
    statuses = re.findall(r" (\d{3})$", out, re.M)
    assert statuses == expected_statuses(README), out
    assert re.search(r"^running ssh -i \S+my_ec2_keypair\.pem ec2-user@[0-9.]+$", out, re.M), out
    assert fresh_emulator.instances()[instance_id]["State"]["Name"] == "terminated"


def test_curl_tour_creates_lists_stops_starts_and_deletes(api_server, fresh_emulator):
    out = run_tour(REFERENCE, api_server)
    assert out.startswith('{"status":"ok"} 200')
    instance_id = re.search(r"created (i-[0-9a-f]+)", out).group(1)
    answers = [re.fullmatch(r"(\{.*\}) (\d{3})", line) for line in out.splitlines() if line.startswith("{")]
    assert all(answers), out
    assert [a.group(2) for a in answers] == expected_statuses(REFERENCE)  # what the reference says it prints
    docs = [json.loads(a.group(1)) for a in answers]
    states = [d["state"] for d in docs if d.get("id") == instance_id]
    # get (running), stop, start, patch (auto-stop), patch (name and tags), patch (schedule), snooze, delete
    assert states[0] == "running" and states[1] in ("stopping", "stopped")
    assert states[2] in ("pending", "running") and states[7] in ("shutting-down", "terminated")
    mine = [d for d in docs if d.get("id") == instance_id]
    assert mine[3]["auto_stop_minutes"] == 120 and mine[3]["stop_at"]
    assert mine[4]["name"] == "my-web-box" and mine[4]["tags"] == {"Team": "web"}
    attached, snoozed = mine[5]["next_action"], mine[6]["next_action"]
    assert mine[5]["schedule"] == "weekdays" and ec2_tag(fresh_emulator, instance_id, "Schedule") == "weekdays"
    # An hour later; or, when that hour reaches into the schedule's next period (a tour run on a weekday morning
    # before 08:00 UTC), that period's stop: a stop inside it would leave the box off for the day.
    assert snoozed["action"] == "stop" and (minutes_between(attached["at"], snoozed["at"]) == 60 or (
        snoozed["source"] == "schedule" and snoozed["at"].endswith("T17:00:00.000000Z")))
    preview = next(d for d in docs if d.get("name") == "weekdays" and "actions" in d)
    assert preview["actions"] and all(a["instance_ids"] == [instance_id] for a in preview["actions"])
    assert preview["running_hours"] == 45 and preview["estimated_savings_usd"] > 0
    filtered = next(d for d in docs if "instances" in d and d["instances"] and d["instances"][0].get("name") ==
                    "my-web-box")
    assert [i["id"] for i in filtered["instances"]] == [instance_id]
    metrics = next(d for d in docs if "datapoints" in d)
    assert (metrics["instance_id"], metrics["metric"], metrics["period"]) == (instance_id, "CPUUtilization", 300)
    budget = next(d for d in docs if "budget_usd" in d)
    assert instance_id in [i["id"] for i in budget["instances"]] and budget["committed_usd"] > 0
    assert instance_id in [i["id"] for i in docs[-1]["instances"]]  # terminated ones included
    ec2 = fresh_emulator.instances()[instance_id]
    assert ec2["State"]["Name"] == "terminated"
    tags = {t["Key"]: t["Value"] for t in ec2["Tags"]}
    assert tags["Team"] == "web" and tags["Name"] == "my-web-box" and "Owner" not in tags


def ec2_tag(emulator, instance_id: str, key: str) -> str | None:
    return {t["Key"]: t["Value"] for t in emulator.instances()[instance_id]["Tags"]}.get(key)


def minutes_between(first: str, second: str) -> float:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(second) - parse(first)).total_seconds() / 60


def test_configuration_table_lists_every_setting():
    from app.config import Settings

    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in REFERENCE, f"docs/REFERENCE.md configuration table misses {name.upper()}"


def test_make_help_shows_the_values_in_force():
    done = subprocess.run(["make", "--no-print-directory", "help", "PORT=9123", "HOST=0.0.0.0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Start the API on 0.0.0.0:9123" in done.stdout and "$(" not in done.stdout
