"""Schemathesis against live servers (real uvicorn processes, real scripts, real moto server).

No 5xx, and every response matches the OpenAPI schema the server publishes. The run is bounded
(FUZZING_MAX_EXAMPLES cases per operation in the fuzzing phase, MAX_EXAMPLES scenarios in the stateful
phase) because its cost is the `aws` processes it causes (~0.45 CPU-s each): a create that passes
validation spawns three (its SSH group, the rule, the launch) and a sweep, a metrics query, a transition or
an ssh-access change one or two. The stateful phase keeps 10 scenarios: with 5 it covered 5 API links, not
20; with 10 a run covers 11 to 21 of the inferred links. Every operation is tested in the coverage and
fuzzing phases; the examples phase tests those with examples, the stateful one follows links.
Schemathesis runs as a subprocess in a tmp dir, so its `.hypothesis/` and `.schemathesis/` caches never land
in the repository.

Two servers on one emulator, two schemathesis runs (issue 30): the coverage and fuzzing phases run against a
server whose budget (BUDGET_USD=0.0001) refuses every schema-valid create by policy with a 409, after the
schema, the free-tier policy, the catalogue and the price are checked and before any `aws` process; the
examples and stateful phases run against the module's server, which accepts. So POST /instances is tested
both ways: accepted (the schema's example, the stateful scenarios' creates and the links from them: start,
stop, delete, ssh-access, PATCH, metrics, ... on instances created through the API) and refused by the
budget (every boundary and random valid body). The refusing server also tracks one live instance (launched in
the emulator, adopted by its start-up sweep; BUDGET_ENFORCEMENT=notify so its guard does not stop it), which
the fuzzing phase's cases for /instances/{instance_id}/... reuse: stop, delete, metrics, tags on a live id.
Before: one server, all four phases, 77-83 `aws` processes (the coverage phase's 7 boundary creates and the
fuzzing phase's operations on the ~10 instances earlier phases had made); after: ~35 (one run: 13 on the
refusing server, 21 on the accepting one). Not tested any more: a boundary-valued create (the coverage
phase's) or a random valid create (the fuzzing phase's) going all the way to EC2 (the accepting phases'
creates do; tests/test_hostile_input.py sends values EC2 allows through the scripts as exact literals).

The coverage phase sends its cases for /instances/{instance_id}/... with generated ids (a 404 after
validation), not with the ids earlier responses returned (`extra-data-sources.responses = false` for
that phase): its boundary cases of PATCH, ssh-access, metrics, start and stop on live instances were
two thirds of its `aws` processes. Those operations on live instances are still tested by the examples,
fuzzing (which reuses live ids) and stateful phases.

Checks: every check (`[checks] enabled = true`), except these, each for a stated reason:

- `positive_data_acceptance` on POST /instances only: a body that matches the schema may still be
  refused with a 400 by the free-tier policy (an instance type or AMI the region does not offer as
  free tier, storage over 30 GB). That is the documented contract (400 policy, 422 schema): the
  allowed types and AMIs are configuration and EC2 catalogue data, not schema.
- `positive_data_acceptance` on PATCH /instances/{instance_id} too: a well-formed `stop_at` in the past
  is refused with a 400 `stop_at_in_past` (policy: time is not schema).
- `negative_data_rejection` on GET /instances: a query value has no type on the wire, so a number
  generated where a tag filter (a string) is expected arrives as text that is a valid tag key. (The
  other query parameters are checked by the in-process route tests and tests/test_tags.py.)
- `unsupported_method` on /instances/sync and /instances/actions only: `GET /instances/sync` is routed
  to `GET /instances/{instance_id}` with the id "sync", which is answered 404 like every id that is
  not tracked (the design decision: malformed or unknown ids are 404), not 405.
- `positive_data_acceptance` on POST /instances/actions: a schema-valid start may be refused as a set
  by the budget (409), and a selector matching more than 1,000 instances is a 400 (policy).
- `positive_data_acceptance` on POST /schedules and PUT /schedules/{name}: overlapping periods, a time
  zone the IANA database does not have and a date that does not exist are 422s that name the field
  (issue 27's contract); no JSON Schema can say them. On POST /instances/{instance_id}/snooze: an `until`
  in the past or more than 7 days ahead is a 400 (policy: time is not schema).
- `use_after_free`: DELETE terminates the instance in EC2 and keeps its record (state
  `terminated`, with its events) on purpose, so a GET after a DELETE is 200.
"""

import subprocess
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.support.processes import ROOT, VENV_BIN, safe_env
from tests.support.seeding import launch_managed
from tests.support.server import ApiServer

TOKEN = "schemathesis-token-0123456789abcdef"
MAX_EXAMPLES = 10  # 15 until issue 26: 970 cases, 206 aws processes; 10: 909 cases, 170 processes
FUZZING_MAX_EXAMPLES = 5  # 10 until issue 26, part 3: ~30 fewer aws processes, still every operation
CONFIG = """
[checks]
enabled = true
# Kept records: a terminated instance stays readable (with its events) after DELETE.
use_after_free.enabled = false

[[operations]]
include-path = "/instances"
include-method = "POST"
# Schema-valid bodies may be refused by the free-tier policy with a 400 (documented contract).
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/instances/{instance_id}"
include-method = "PATCH"
# A schema-valid stop_at in the past (or beyond year 9000) is refused by policy with a 400.
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/instances"
include-method = "GET"
# A query value has no type on the wire: a number generated where a tag filter (a string) is expected
# arrives as the same text, which is a valid tag key (`tag=-0.5`, `tag=7`).
checks.negative_data_rejection.enabled = false

[[operations]]
include-path = "/instances/sync"
# GET /instances/sync reaches GET /instances/{instance_id} and is a 404 like any unknown id.
checks.unsupported_method.enabled = false

[[operations]]
include-path = "/instances/actions"
# The same: GET /instances/actions is GET /instances/{instance_id} with an id nobody tracks.
checks.unsupported_method.enabled = false
# A start is admitted by the budget as a set (409), a too-wide selector is a 400: policy, not schema.
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/schedules"
include-method = "POST"
# A schedule's periods may not overlap, its zone must exist in the IANA database, its holidays must be real
# dates (2026-02-30 is not): 422s naming the field (issue 27) that no JSON Schema can say.
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/schedules/{name}"
include-method = "PUT"
# The same for a changed schedule.
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/instances/{instance_id}/snooze"
# A schema-valid `until` in the past, or more than 7 days ahead, is refused by policy with a 400.
checks.positive_data_acceptance.enabled = false

# The coverage phase's cases for /instances/{instance_id}/... use generated ids, not live instances' ids
# (~36 `aws` processes fewer; see the module's text). The other phases still reuse live ids.
[phases.coverage.extra-data-sources]
responses = false
""" + f"""
[phases.fuzzing.generation]
max-examples = {FUZZING_MAX_EXAMPLES}
"""


def _tail(text: str, limit: int = 20_000) -> str:
    return text if len(text) <= limit else f"[... {len(text) - limit} characters cut ...]\n{text[-limit:]}"


@pytest.fixture(scope="module")
def live(emulator, tmp_path_factory):
    """The module's one server, on an emptied emulator: the pinned tests below (refusals and a 405 only: they launch
    nothing) run on it first, then schemathesis. One server start and its start-up sweep fewer than a server each."""
    emulator.reset()
    # No periodic sweeps (every 30 s: ~5 describe-instances in a run, none caused by a request): the follow-up sweep
    # each mutation asks for still runs, so every state a transition leads to is still recorded and answered.
    server = ApiServer(tmp_path_factory.mktemp("schemathesis-server"), emulator.url, API_TOKEN=TOKEN,
                       RECONCILE_INTERVAL_SECONDS="3600")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain(live):
    with httpx.Client(base_url=live.url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


# -- what schemathesis found, pinned as plain tests (first: they change nothing in EC2) -------------------------
REFUSED_TAGS = [{"$(id)": "v"}, {"k": 1}, {"k": {"Key": "x"}}, {"x},{Key=Owner": "v"}, {"k": "v;id"},
                {"Name": "v"}, {"aws:x": "v"}]


def test_published_tags_schema_refuses_what_the_server_refuses(plain):
    """The OpenAPI `tags` schema must not call valid what the server answers 422 to.

    Pydantic renders dict[TagKey, TagValue] as `patternProperties` without `additionalProperties:
    false`, so by the schema any key that does not match the pattern may carry any value.
    """
    document = plain.get("/openapi.json").json()
    schema = {**document["components"]["schemas"]["InstanceCreate"]["properties"]["tags"],
              "components": document["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    mismatches = []
    for tags in REFUSED_TAGS:
        answer = plain.post("/instances", json={"name": "t", "ami": "amazon-linux-2023", "instance_type": "t3.micro",
                                                "tags": tags})
        assert answer.status_code == 422, answer.text
        if validator.is_valid(tags):
            mismatches.append(tags)
    assert mismatches == [], f"schema-valid but refused with 422: {mismatches}"


@pytest.mark.parametrize("path, methods", [("/instances", {"GET", "POST"}),
                                           ("/instances/i-0123456789abcdef0", {"GET", "DELETE"})])
def test_405_allow_header_lists_every_method_of_the_path(plain, path, methods):
    """RFC 9110: a 405 lists the methods the resource supports; Starlette lists only the first route's."""
    response = plain.request("OPTIONS", path)
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert methods <= allowed, response.headers["allow"]


SCHEMA_VIOLATING = [{"create_security_group": 0}, {"create_security_group": "true"}, {"storage_gb": "8"},
                    {"storage_gb": "10 "}]


@pytest.mark.parametrize("extra", SCHEMA_VIOLATING, ids=[repr(e) for e in SCHEMA_VIOLATING])
def test_schema_violating_types_are_refused_not_coerced(plain, extra):
    """Strict at the edge: the schema says boolean / integer, so 0, "true" and "8" are 422 with nothing
    spawned (pydantic's lax mode would turn them into False, True and 8 and launch)."""
    before = plain.get("/instances", params={"include_terminated": "true"}).json()
    answer = plain.post("/instances", json={"name": "lax", "ami": "amazon-linux-2023", "instance_type": "t3.micro",
                                            **extra})
    assert answer.status_code == 422, answer.text
    assert plain.get("/instances", params={"include_terminated": "true"}).json() == before


# -- schemathesis, after them (the module's order) -----------------------------------------------------------
# The coverage and fuzzing phases run against a second server on the same emulator whose budget refuses every create
# by policy (409 budget_exceeded, checked after the schema, the free-tier policy and the catalogue, before any `aws`
# process): they test every operation, POST /instances up to its refusal, and on one live instance (launched in the
# emulator, adopted by that server's start-up sweep) the operations on a live id. The examples and stateful phases
# run against the module's server, which accepts: the schema's example create, the stateful scenarios' creates and
# the links from them (start, stop, delete, ssh-access, PATCH, metrics, ... on instances created through the API).
REFUSING_PHASES, ACCEPTING_PHASES = "coverage,fuzzing", "examples,stateful"


def _schemathesis(url: str, phases: str, workdir: Path) -> str:
    workdir.mkdir()
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [str(VENV_BIN / "schemathesis"), "--config-file", str(config), "run", f"{url}/openapi.json",
               "--phases", phases, "--max-examples", str(MAX_EXAMPLES), "-H", f"Authorization: Bearer {TOKEN}",
               "--request-timeout", "90", "--generation-database", "none", "--no-color",
               # One worker: with two, CPython 3.11 sometimes fails inside schemathesis' coverage phase
               # ("SystemError: AST constructor recursion depth mismatch"), an error of the tool.
               "--workers", "1"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=workdir, env=safe_env(), capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    output = _tail(f"{done.stdout}\n{done.stderr}") + f"\n(exit {done.returncode} after {elapsed:.0f} s)"
    assert done.returncode == 0, output
    assert "Test cases:" in done.stdout, output
    return output


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(live, emulator, tmp_path):
    caches_before = {name: (ROOT / name).exists() for name in (".hypothesis", ".schemathesis")}
    launch_managed(emulator, 1, name="schemathesis-adopted")
    # BUDGET_ENFORCEMENT=notify: the budget guard does not stop the adopted instance (it is over this budget).
    (tmp_path / "refusing-server").mkdir()
    refusing = ApiServer(tmp_path / "refusing-server", emulator.url, API_TOKEN=TOKEN, BUDGET_USD="0.0001",
                         BUDGET_ENFORCEMENT="notify", RECONCILE_INTERVAL_SECONDS="3600")
    try:
        _schemathesis(refusing.url, REFUSING_PHASES, tmp_path / "refusing")
    finally:
        refusing.stop()
    refused_log = refusing.server_log()
    # Schema-valid creates were sent and refused (409: the budget; the server logs no error codes), none launched.
    assert '"POST /instances HTTP/1.1" 409' in refused_log, "no create reached the budget's refusal"
    assert refusing.calls_of("run-instances") == 0, refusing.aws_calls()
    output = _schemathesis(live.url, ACCEPTING_PHASES, tmp_path / "accepting")
    assert live.calls_of("run-instances") >= 1, output  # the examples phase's create, at least
    for name, existed in caches_before.items():
        assert (ROOT / name).exists() == existed, f"schemathesis wrote {name} into the repository"
    for log in (refused_log, live.server_log()):
        assert " 500 " not in log and "Traceback" not in log, log[-5000:]
