"""Hostile input through the real server, the real scripts and a real moto server.

Every route gets shell metacharacters, command substitutions, newlines, NUL, very long strings,
path traversal and AWS-shorthand-breaking characters in every place a caller controls: body fields
(name, ami, instance_type, tag keys and values, storage_gb), path ids, the query string, the
Idempotency-Key and Authorization headers and raw non-JSON bodies. Each answer must be a 4xx, and
afterwards:

- no `aws` process that changes anything was spawned (the shim logs every one), no script was
  spawned only to refuse its arguments (the server logs those), and no `aws` argv carries a
  hostile value;
- no file named after a payload exists (every payload that could write a file targets a name
  carrying this run's MARKER, under /tmp, the server's working directory or the scripts'), and
  the server's own tmp dir holds exactly the files it held before;
- EC2 (the emulator) holds no new instance and no new security group.

Values EC2 itself allows (`=`, `:`, `/`, `@`, `+`, a leading `-`, `file://...`) are not refused:
those tests check they reach EC2 as exact literals, never as options or shorthand.
"""

import hashlib
import json
import os
import re
import socket
import sqlite3
import uuid
from contextlib import closing
from urllib.parse import quote

import httpx
import pytest

from tests.support.processes import ROOT, TLS
from tests.support.seeding import adopt, launch_managed
from tests.support.server import ApiServer

# One marker per run; pytest-xdist workers share the run's id, so they collect the same test ids.
MARKER = f"ec2cl-pwned-{(os.environ.get('PYTEST_XDIST_TESTRUNUID') or uuid.uuid4().hex)[:10]}"
PWN = f"/tmp/{MARKER}"
TOKEN = "hostile-suite-token-0123456789abcdef"
VALID = {"name": "hostile-ok", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}
# The valid creates below make their security group without the SSH rule: no caller's value reaches that
# `aws` process (its CIDR comes from ssh_from), so it is one process per create the tests need not spawn.
NO_SSH = {"ssh_from": "none"}
# What EC2 allows in tag keys/values, and what the API allows in names (plus a leading letter/digit).
EC2_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.:/=+-@")
SCRIPT_REFUSED = re.compile(r"failed \(exit \d+\)|rejected its arguments")


def _shell(target: str) -> list[str]:
    return [
        f"$(touch {target})", f"`touch {target}`", f";touch {target};", f"|touch {target}",
        f"&&touch {target}&", f"x>{target}", f"x>>{target}", f"x\ntouch {target}", f"x\r\ntouch {target}",
        f"x\x00touch {target}", f"'$(touch {target})'", f'"; touch {target}; "',
        "${IFS}touch${IFS}" + target, f"$(printf 'x'>{target})", f"x;cp /etc/passwd {target}",
        f"x<(touch {target})", f"!touch {target}",
    ]


# Every value here has a character EC2 does not allow in names and tags, or is too long for any
# text field: each must be refused wherever it goes.
REJECTED_EVERYWHERE = [
    *_shell(PWN), *_shell(MARKER), *_shell(f"../../../../../../tmp/{MARKER}"),
    # AWS CLI shorthand and JSON-as-a-string
    "x},{Key=Owner,Value=evil", "x,Key=Owner,Value=evil", "Key=Name,Value=evil]", "x}", "{x}",
    '[{"Key":"Owner","Value":"evil"}]', "a\\,b", "Name=[a,b]", "x,y",
    # options glued to hostile values, globs, quotes, control characters
    "--endpoint-url=http://127.0.0.1:9;x", "-* x", "*", "?", "[a-z]", "~root", "'", '"', "\\",
    "\t", "\x1b[31mred", "x\x7f", "\x00", "\n", "\r",
    # Unicode look-alikes and direction tricks
    "\uff58\uff1b\uff49\uff44", "\u202etxt.exe", "caf\u00e9", "a\u200bb", "\u0661\u0662", "\ud7ff",
    # traversal with a character EC2 refuses
    "..\\..\\windows", "%2e%2e%2fetc%2fpasswd", "..%00", "/etc/passwd%00",
    # lengths over every EC2 text limit (256) while under the body limit
    "x" * 257, "y" * 60_000,
]

# Refused as a name, an AMI, an instance type, a path id or a query value, but legal in EC2 tags:
# see test_tag_values_ec2_allows_arrive_as_exact_literals.
OPTION_LIKE = ["--dry-run", "-h", "--", "--tag", "--endpoint-url=http://127.0.0.1:9", "-1"]
TRAVERSAL = ["..", "../../../../../../tmp/" + MARKER, "/etc/passwd", "....//....//etc", "./" + MARKER]
LITERAL_URLS = ["file://" + PWN, "fileb:///etc/passwd", "http://169.254.169.254/latest/meta-data/"]
REJECTED_AS_NAME = REJECTED_EVERYWHERE + OPTION_LIKE + TRAVERSAL  # a name may be a file:// literal
REJECTED_AS_WORD = REJECTED_AS_NAME + LITERAL_URLS


def _label(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...len{len(text)}"


def ids(values) -> list[str]:
    return [f"{i}:{_label(v)}" for i, v in enumerate(values)]


def test_the_corpus_itself_is_hostile():
    """Guard against a corpus that drifts into values EC2 allows (which would then be 201s)."""
    for value in REJECTED_EVERYWHERE:
        assert len(value) > 256 or set(value) - EC2_SAFE, value


# -- fixtures --------------------------------------------------------------------------------------
class Watch:
    """What must not change while a hostile request is answered.

    EC2 itself is compared per test only where asked (`check_ec2`, ~50 ms a look); everywhere else
    "no aws process that changes anything was spawned" stands for it (the server is the only client
    of the emulator), and `ec2_ledger` compares EC2 before and after the whole module.
    """

    def __init__(self, server: ApiServer, emulator, check_ec2: bool = False) -> None:
        self.server = server
        self.emulator = emulator
        self.check_ec2 = check_ec2

    def _tmp_files(self) -> set[str]:
        # os.walk, not Path.rglob: the same names at a fraction of the CPU (twice a test, ~1,500 tests)
        found = set()
        for base, dirs, files in os.walk(self.server.tmp):
            found.update(os.path.relpath(os.path.join(base, n), self.server.tmp) for n in dirs + files)
        return found

    def mark(self) -> None:
        self.calls = len(self.server.aws_calls())
        # Where the server's log ends now (bytes): only what follows is read, not the whole log twice a test.
        self.log_offset = self.server.log_path.stat().st_size
        self.ec2 = ec2_snapshot(self.emulator) if self.check_ec2 else None
        self.tmp = self._tmp_files()

    def payload_files(self) -> list[str]:
        found = [f"/tmp/{n}" for n in os.listdir("/tmp") if MARKER in n]  # Path.glob's match, without its cost
        for base, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in (".git", ".venv", "node_modules")]
            found += [os.path.join(base, n) for n in files + dirs if MARKER in n or "pwned" in n.lower()]
        return found

    def assert_untouched(self) -> None:
        new_calls = self.server.aws_calls()[self.calls:]
        assert self.server.mutations_since(self.calls) == [], "an aws process that changes EC2 was spawned"
        assert not [c for c in new_calls if any(MARKER in arg for arg in c)], new_calls
        with open(self.server.log_path, "rb") as log:
            log.seek(self.log_offset)
            refused = SCRIPT_REFUSED.findall(log.read().decode(errors="replace"))
        assert refused == [], "a script was spawned and refused its arguments (see server.log)"
        assert self.payload_files() == []
        assert self._tmp_files() == self.tmp, "the server's tmp dir changed"
        if self.check_ec2:
            assert ec2_snapshot(self.emulator) == self.ec2, "EC2 holds something new"


def ec2_snapshot(emulator) -> tuple[set, set]:
    groups = {g["GroupId"] for g in emulator.ec2.describe_security_groups()["SecurityGroups"]}
    return set(emulator.instances()), groups


# Instances the tests below create on purpose (valid creates with hostile-but-legal input).
CREATED_ON_PURPOSE: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def ec2_ledger(emulator):
    """EC2 after the whole module holds exactly what the valid creates made: their instances, and each one's own
    security group (issue 25), no other group."""
    instances, groups = ec2_snapshot(emulator)
    yield
    now_instances, now_groups = ec2_snapshot(emulator)
    assert now_instances - instances == CREATED_ON_PURPOSE
    described = emulator.instances()
    theirs = {g["GroupId"] for i in CREATED_ON_PURPOSE
              for g in described[i].get("SecurityGroups") or described[i]["NetworkInterfaces"][0]["Groups"]}
    assert now_groups == groups | theirs


@pytest.fixture(scope="module")
def server(emulator, tmp_path_factory):
    # No periodic sweeps: the only aws processes are the ones a request causes.
    srv = ApiServer(tmp_path_factory.mktemp("hostile"), emulator.url, RECONCILE_INTERVAL_SECONDS="3600")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60, verify=TLS) as c:
        yield c


@pytest.fixture(scope="module")
def tracked(client, emulator) -> str:
    """One real tracked instance, so that ids 'almost' equal to it are tried too. Launched in the emulator and
    adopted by a sync (tests/support/seeding.py; creates are tested below): once it is recorded running, no sweep
    is pending that could change its record while the corpus runs."""
    [box] = launch_managed(emulator, name="hostile-target", instance_type=VALID["instance_type"])
    CREATED_ON_PURPOSE.add(box)
    adopt(client, [box])
    return box


@pytest.fixture
def watch(server, emulator, tracked):
    w = Watch(server, emulator)
    w.mark()
    yield w
    w.assert_untouched()


def assert_refused(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert set(body) >= {"detail", "code"}, body


# -- POST /instances body fields ---------------------------------------------------------------------
def _body(slot: str, value):
    if slot == "name":
        return {**VALID, "name": value}
    if slot == "ami":
        return {**VALID, "ami": value}
    if slot == "instance_type":
        return {**VALID, "instance_type": value}
    if slot == "tag_key":
        return {**VALID, "tags": {value: "v"}}
    if slot == "tag_value":
        return {**VALID, "tags": {"Owner": value}}
    if slot == "storage_gb":
        return {**VALID, "storage_gb": value}
    raise AssertionError(slot)


@pytest.mark.parametrize("value", REJECTED_AS_NAME, ids=ids(REJECTED_AS_NAME))
def test_create_refuses_hostile_names(client, watch, value):
    assert_refused(client.post("/instances", json=_body("name", value)))


@pytest.mark.parametrize("value", REJECTED_AS_WORD, ids=ids(REJECTED_AS_WORD))
@pytest.mark.parametrize("slot", ["ami", "instance_type", "storage_gb"])
def test_create_refuses_hostile_words(client, watch, slot, value):
    assert_refused(client.post("/instances", json=_body(slot, value)))


@pytest.mark.parametrize("value", REJECTED_EVERYWHERE, ids=ids(REJECTED_EVERYWHERE))
@pytest.mark.parametrize("slot", ["tag_key", "tag_value"])
def test_create_refuses_hostile_tags(client, watch, slot, value):
    assert_refused(client.post("/instances", json=_body(slot, value)))


RESERVED_OR_SHAPED_TAGS = [
    {"aws:cloudformation:stack-name": "x"}, {"AWS:x": "x"}, {"Aws:x": "x"}, {"Name": "evil"},
    {"ManagedBy": "someone-else"}, {"RequestId": "forged"}, {"": "empty-key"}, {"k" * 129: "v"},
    {f"k{i}": "v" for i in range(41)}, "Key=Owner,Value=evil", [{"Key": "Owner", "Value": "evil"}],
    {"Owner": {"Key": "x"}}, {"Owner": ["a"]}, {"Owner": 1}, {"Owner": None},
]


@pytest.mark.parametrize("tags", RESERVED_OR_SHAPED_TAGS, ids=ids(RESERVED_OR_SHAPED_TAGS))
def test_create_refuses_reserved_or_malformed_tags(client, watch, tags):
    assert_refused(client.post("/instances", json={**VALID, "tags": tags}))


ODD_NUMBERS = [-1, 0, 7, 31, 2**31 + 1, 10**30, -(10**30), 8.5, 1e308, "0x8", "08;id", "8\n;id", [8],
               {"$gt": 8}, None, True, "NaN", "Infinity"]


@pytest.mark.parametrize("value", ODD_NUMBERS, ids=ids(ODD_NUMBERS))
def test_create_refuses_odd_storage(client, watch, value):
    assert_refused(client.post("/instances", json={**VALID, "storage_gb": value}))


@pytest.mark.parametrize("field", ["name", "ami", "instance_type"])
@pytest.mark.parametrize("value", [None, 1, [], {}, "", " ", True], ids=ids([None, 1, [], {}, "", " ", True]))
def test_create_refuses_wrong_types_and_empties(client, watch, field, value):
    assert_refused(client.post("/instances", json={**VALID, field: value}))


ALLOWED_BY_PATTERN_BUT_UNKNOWN = [
    ("ami", "ami-0123456789abcdef0"), ("ami", "ami-deadbeef"), ("ami", "ubuntu-24.04.evil"),
    ("ami", "amazon-linux-2023.1"), ("instance_type", "t3.large"), ("instance_type", "t3.micro.x"),
    ("instance_type", "p5.48xlarge"), ("instance_type", "t3-micro"),
]


@pytest.mark.parametrize("field, value", ALLOWED_BY_PATTERN_BUT_UNKNOWN)
def test_unknown_amis_and_types_are_policy_refusals(client, watch, field, value):
    response = client.post("/instances", json={**VALID, field: value})
    assert response.status_code == 400, response.text


RAW_BODIES = [
    (b"name=x&ami=amazon-linux-2023&instance_type=t3.micro", "application/x-www-form-urlencoded"),
    (b"<instance><name>x</name></instance>", "application/xml"),
    (f"$(touch {PWN})".encode(), "application/json"),
    (f"$(touch {PWN})".encode(), "text/plain"),
    (b"\x00\x01\x02\xff\xfe", "application/json"),
    (b'{"name": "x"', "application/json"),
    (b"[" * 30_000 + b"]" * 30_000, "application/json"),
    (b'{"name":"x","ami":"amazon-linux-2023","instance_type":"t3.micro","storage_gb":' + b"9" * 5000 + b"}",
     "application/json"),
    (b'{"name":"x","ami":"amazon-linux-2023","instance_type":"t3.micro","storage_gb":NaN}', "application/json"),
    (b'{"name":"x","ami":"amazon-linux-2023","instance_type":"t3.micro","tags":{"\\ud800":"v"}}',
     "application/json"),
    (b'{"name":"\\ud800x","ami":"amazon-linux-2023","instance_type":"t3.micro"}', "application/json"),
    (b'{"name":"x","ami":"amazon-linux-2023","instance_type":"t3.micro","tags":{"\xff":"v"}}',
     "application/json"),
    (b'{"name":"ok","name":"x;id","ami":"amazon-linux-2023","instance_type":"t3.micro"}', "application/json"),
    (json.dumps({**VALID, "name": f"$(touch {PWN})"}).encode("utf-16"), "application/json"),
    (b"null", "application/json"),
    (b'"a string"', "application/json"),
    (b"", "application/json"),
    (b"--x\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n--x--\r\n", "multipart/form-data; boundary=x"),
]


@pytest.mark.parametrize("raw, content_type", RAW_BODIES, ids=ids([r for r, _ in RAW_BODIES]))
def test_create_refuses_raw_non_json_bodies(client, watch, raw, content_type):
    assert_refused(client.post("/instances", content=raw, headers={"content-type": content_type}))


def test_create_refuses_bodies_over_the_limit_even_chunked(client, watch):
    def chunks():
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}'

    assert_refused(client.post("/instances", content=b"".join(chunks()),
                               headers={"content-type": "application/json"}))
    # Without Content-Length the limit is enforced while reading.
    chunked = client.post("/instances", content=chunks(), headers={"content-type": "application/json"})
    assert_refused(chunked)
    assert chunked.status_code == 413 and chunked.json()["code"] == "body_too_large"


# -- Idempotency-Key --------------------------------------------------------------------------------
REJECTED_KEYS = [f"$(touch {PWN})", f"; touch {PWN}", "x" * 256, "", "caf\u00e9".encode("latin-1"),
                 b"\xff\xfe", "a b"]


@pytest.mark.parametrize("key", REJECTED_KEYS, ids=ids(REJECTED_KEYS))
def test_create_refuses_hostile_idempotency_keys(client, watch, key):
    assert_refused(client.post("/instances", json=VALID, headers={"Idempotency-Key": key}))


# Printable ASCII without spaces is a legal key: an opaque token that must reach EC2 as one argv word
# (the key itself, or its SHA-256), never as an option, a file:// reference or a shell word.
OPAQUE_KEYS = [f"$(touch${{IFS}}{PWN})", f";touch${{IFS}}{PWN};", f"`touch${{IFS}}{MARKER}`",
               "x},{Key=Owner,Value=evil", "--dry-run", "-h", f"file://{PWN}", "https://169.254.169.254/",
               "'\"\\|&<>*?"]


# The valid creates of this module: each legal-but-hostile key's create, the first five of them also carrying a
# literal name and LITERAL_TAGS (test_tag_values_ec2_allows_arrive_as_exact_literals, below, checks those on the
# same create): nine creates, not fourteen (each is a security group and a launch, ~0.9 CPU-s of `aws` processes).
LAUNCHED: dict[str, dict] = {}


def launch_once(server: ApiServer, client: httpx.Client, emulator, key: str) -> dict:
    """The create for `key` (made by the first test that needs it): its body, answer, the run-instances argv it
    spawned (exactly one) and the instance EC2 holds."""
    if key not in LAUNCHED:
        index = OPAQUE_KEYS.index(key)
        literal = LITERAL_NAMES[index] if index < len(LITERAL_NAMES) else None
        body = {**VALID, **NO_SSH, "name": literal or "opaque-key", **({"tags": LITERAL_TAGS} if literal else {})}
        mark = len(server.aws_calls())
        response = client.post("/instances", json=body, headers={"Idempotency-Key": key})
        assert response.status_code == 201, response.text
        CREATED_ON_PURPOSE.add(response.json()["id"])
        launches = [c for c in server.mutations_since(mark) if "run-instances" in c]
        assert len(launches) == 1, launches
        LAUNCHED[key] = {"body": body, "item": response.json(), "argv": launches[0],
                         "instance": emulator.instances()[response.json()["id"]]}
    return LAUNCHED[key]


@pytest.mark.parametrize("key", OPAQUE_KEYS, ids=ids(OPAQUE_KEYS))
def test_legal_but_hostile_idempotency_keys_are_opaque_tokens(server, client, emulator, tracked, key):
    watch = Watch(server, emulator)
    watch.mark()
    made = launch_once(server, client, emulator, key)
    argv = made["argv"]
    token = argv[argv.index("--client-token") + 1]
    assert token in (key, hashlib.sha256(key.encode()).hexdigest())
    assert not token.startswith("-") and not token.lower().startswith(("file://", "fileb://", "http://", "https://"))
    assert {t["Key"]: t["Value"] for t in made["instance"]["Tags"]}["Name"] == made["body"]["name"]
    assert watch.payload_files() == []
    replay = client.post("/instances", json=made["body"], headers={"Idempotency-Key": key})
    assert replay.status_code == 201 and replay.json()["id"] == made["item"]["id"]
    assert replay.headers.get("Idempotent-Replayed") == "true"


# -- path ids -----------------------------------------------------------------------------------------
def stored(server: ApiServer, instance_id: str) -> tuple[list, list]:
    """What is recorded of an instance: its row (whose `rev` every write bumps) and its events, read from the
    server's database. Not a GET: two GETs per path-id case were a quarter of the requests this module sends."""
    with closing(sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True, timeout=30)) as conn:
        row = conn.execute("SELECT * FROM instances WHERE id = ?", (instance_id,)).fetchall()
        events = conn.execute("SELECT * FROM instance_events WHERE instance_id = ? ORDER BY seq",
                              (instance_id,)).fetchall()
    assert row, f"{instance_id} is not recorded"
    return row, events


ID_ROUTES = [("GET", "/instances/{id}"), ("GET", "/instances/{id}/events"), ("POST", "/instances/{id}/start"),
             ("POST", "/instances/{id}/stop"), ("DELETE", "/instances/{id}")]
# {ID} is the tracked instance's id: near misses of a real id must not reach it.
PATH_IDS = [v for v in REJECTED_AS_WORD if len(v) < 4000] + [
    "i-0123456789abcdef0", "i-00000000", "I-0123456789ABCDEF0", "i-0123456789abcdef01", "i-xyz",
    "sync", "{ID}\n", "{ID}\x00", "{ID} ", " {ID}", "{ID};id", "{ID}/../{ID}", "{ID}%00",
    "{ID}&instance_ids={ID}", "{ID},{ID}", "{ID}.." , "{ID}*", "{UPPER}", "../{ID}",
]


@pytest.mark.parametrize("value", PATH_IDS, ids=ids(PATH_IDS))
@pytest.mark.parametrize("method, route", ID_ROUTES, ids=[f"{m} {r}" for m, r in ID_ROUTES])
def test_hostile_path_ids_are_4xx(server, client, watch, tracked, method, route, value):
    value = value.replace("{ID}", tracked).replace("{UPPER}", tracked.upper())
    before = stored(server, tracked)
    response = client.request(method, route.replace("{id}", quote(value, safe="")))
    if response.request.url.path == "/" and method == "GET":
        # ".." took the request out of /instances: "/" is the dashboard's redirect (issue 28), which acts on nothing.
        assert response.status_code == 307 and response.headers["location"] == "/ui", response.text
    else:
        assert_refused(response)
    assert stored(server, tracked) == before


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_trailing_slash_only_redirects_to_the_same_id(server, client, watch, tracked, method):
    """FastAPI's trailing-slash redirect (307) is the one non-4xx answer to an odd path: it points at
    the same id on the same origin and acts on nothing by itself."""
    before = stored(server, tracked)
    for path in (f"/instances/{tracked}/", f"/instances/{tracked}%2F"):
        response = client.request(method, path)
        assert response.status_code == 307, response.text
        assert response.headers["location"] == f"{server.url}/instances/{tracked}"
    assert stored(server, tracked) == before


RAW_REQUEST_LINES = [
    f"GET /instances/../../../../tmp/{MARKER} HTTP/1.1",
    f"POST /instances/../instances/sync/../../tmp/{MARKER}/stop HTTP/1.1",
    "DELETE /instances/{ID}/../{ID} HTTP/1.1",
    f"POST /instances/i-0123456789abcdef0;touch%20{PWN}/stop HTTP/1.1",
    f"GET /instances/$(touch%20{PWN}) HTTP/1.1",
    f"GET /instances/i-0123456789abcdef0\ntouch {PWN} HTTP/1.1",
    f"GET /instances/i-0123456789abcdef0 touch {PWN} HTTP/1.1",
]


def raw_status(port: int, request: bytes) -> int | None:
    """Send bytes as they are (no client-side normalisation) and return the status, or None."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None


@pytest.mark.parametrize("line", RAW_REQUEST_LINES, ids=ids(RAW_REQUEST_LINES))
def test_raw_request_lines_with_traversal_are_4xx(server, watch, tracked, line):
    line = line.replace("{ID}", tracked)
    status = raw_status(server.port, f"{line}\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
    assert status is not None and 400 <= status < 500, status


# A newline ending a header early and a NUL inside one: malformed HTTP, refused before the app.
RAW_HEADERS = [f"Idempotency-Key: a\r\ntouch {PWN}", f"Idempotency-Key: a\x00b{MARKER}",
               f"X-Note: $(touch {PWN})\x00", f"Content-Type: application/json\x00{MARKER}"]


@pytest.mark.parametrize("header", RAW_HEADERS, ids=ids(RAW_HEADERS))
def test_header_injection_is_refused(server, watch, header):
    body = json.dumps(VALID).encode()
    request = (f"POST /instances HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    status = raw_status(server.port, request)
    assert status is not None and 400 <= status < 500, status


# -- query strings and the body-less routes ------------------------------------------------------------
@pytest.mark.parametrize("value", [v for v in REJECTED_AS_WORD if len(v) < 4000],
                         ids=ids([v for v in REJECTED_AS_WORD if len(v) < 4000]))
def test_hostile_include_terminated_is_422(client, watch, value):
    response = client.get("/instances", params={"include_terminated": value})
    assert response.status_code == 422, response.text


SYNC_NOISE = [f"$(touch {PWN})", "--dry-run", "x},{Key=Owner,Value=evil", f"x\ntouch {PWN}", "\x00"]


def test_sync_ignores_whatever_it_is_sent(server, client, emulator, tracked):
    """POST /instances/sync takes no input: hostile query/body/headers never reach its one describe call.

    Every value of SYNC_NOISE in one request (each query parameter repeated, each value in the body's lists and a
    header of its own), not one request each: a sync is a describe-instances process (~0.45 CPU-s), and what is
    checked is that none of them reaches it."""
    watch = Watch(server, emulator)
    watch.mark()
    response = client.post("/instances/sync", params={"filter": SYNC_NOISE, "instance_ids": SYNC_NOISE},
                           content=json.dumps({"filters": SYNC_NOISE, "instance_ids": SYNC_NOISE}),
                           headers={"content-type": "application/json",
                                    **{f"X-Filter-{i}": quote(value) for i, value in enumerate(SYNC_NOISE)}})
    assert response.status_code == 200, response.text
    calls = server.aws_calls()[watch.calls:]
    assert calls and all("describe-instances" in c for c in calls), calls
    assert [value for value in SYNC_NOISE if any(value in " ".join(c) for c in calls)] == []
    watch.assert_untouched()


# -- EC2-safe characters only ---------------------------------------------------------------------------
PROBE_CHARS = [chr(c) for c in range(128)] + list("\u00a0\u00e9\u0130\u0131\u017f\u212a\u0661\uff21\u200b"
                                                  "\u202e\u2028\u2029\ufeff\U0001f600")


def test_no_name_outside_the_ec2_safe_set_can_be_created(server, client, emulator, tracked):
    """A valid create with a hostile name is impossible: every character outside letters, digits,
    space and _ . : / = + - @ is refused anywhere in the name, and so is a name not starting with a
    letter or digit (so it can never look like an option)."""
    watch = Watch(server, emulator, check_ec2=True)
    watch.mark()
    accepted = []
    for ch in PROBE_CHARS:
        if ch in EC2_SAFE:
            continue
        for name in (f"a{ch}b", f"{ch}ab", f"ab{ch}"):
            response = client.post("/instances", json={**VALID, "name": name})
            if response.status_code != 422:
                accepted.append((name, response.status_code))
    for first in " _.:/=+-@":
        response = client.post("/instances", json={**VALID, "name": f"{first}ab"})
        if response.status_code != 422:
            accepted.append((f"{first}ab", response.status_code))
    response = client.post("/instances", json={**VALID, "name": "n" * 129})
    if response.status_code != 422:
        accepted.append(("n" * 129, response.status_code))
    assert accepted == []
    watch.assert_untouched()


def test_no_tag_outside_the_ec2_safe_set_can_be_created(server, client, emulator, tracked):
    watch = Watch(server, emulator, check_ec2=True)
    watch.mark()
    accepted = []
    for ch in PROBE_CHARS:
        if ch in EC2_SAFE:
            continue
        for tags in ({f"k{ch}": "v"}, {"k": f"v{ch}"}, {ch: "v"}, {"k": ch}):
            response = client.post("/instances", json={**VALID, "tags": tags})
            if response.status_code != 422:
                accepted.append((tags, response.status_code))
    for tags in ({"k" * 129: "v"}, {"k": "v" * 257}):
        if (response := client.post("/instances", json={**VALID, "tags": tags})).status_code != 422:
            accepted.append((tags, response.status_code))
    assert accepted == []
    watch.assert_untouched()


def test_the_documented_schema_says_the_same(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["InstanceCreate"]["properties"]
    name = re.compile(schema["name"]["pattern"])
    assert schema["name"]["maxLength"] == 128
    assert all(name.fullmatch(f"a{ch}b") is None for ch in PROBE_CHARS if ch not in EC2_SAFE)
    assert name.fullmatch("--dry-run") is None and name.fullmatch("a b:c/d=e+f-g@h_i.j")


# -- literals that EC2 allows arrive as literals ----------------------------------------------------------
LITERAL_TAGS = {
    "Owner": "Key=Owner Value=evil", "x": "a=b:c/d@e+f", "Key=Name": "Value=evil", "--dry-run": "--dry-run",
    "-h": "--endpoint-url=http://127.0.0.1:9", "--tag": "--", "url": "file://" + PWN, "meta": LITERAL_URLS[2],
    "path": "../../../../../../tmp/" + MARKER, "a:b/c@d+e=f": "", "sp ace": " leading and trailing ",
    "k" * 128: "v" * 256,
}
LITERAL_NAMES = ["x Key=Owner Value=evil", "file:///etc/passwd", "a/../../" + MARKER, "n" * 128, "x -h --dry-run"]


@pytest.mark.parametrize("name", LITERAL_NAMES, ids=ids(LITERAL_NAMES))
def test_tag_values_ec2_allows_arrive_as_exact_literals(server, client, emulator, tracked, name):
    """On the create of a legal-but-hostile Idempotency-Key (launch_once): the key reaches EC2 only as the client
    token, and the name and tags as they are checked here."""
    watch = Watch(server, emulator)
    watch.mark()
    made = launch_once(server, client, emulator, OPAQUE_KEYS[LITERAL_NAMES.index(name)])
    item = made["item"]
    assert item["name"] == name and item["tags"] == LITERAL_TAGS
    ec2_tags = {t["Key"]: t["Value"] for t in made["instance"]["Tags"]}
    assert ec2_tags.pop("Name") == name
    assert ec2_tags.pop("ManagedBy") == "ec2-creator-local"
    assert len(ec2_tags.pop("RequestId")) > 0
    assert ec2_tags == LITERAL_TAGS
    argv = made["argv"]
    # Tags travel as one JSON argument, never as shorthand; no user text becomes an argv word of its own.
    specs = json.loads(argv[argv.index("--tag-specifications") + 1])
    assert {t["Key"]: t["Value"] for t in specs[0]["Tags"]}["Name"] == name
    user_text = {name, *LITERAL_TAGS, *LITERAL_TAGS.values()} - {""}
    assert not user_text & set(argv)
    assert watch.payload_files() == []
    assert client.get(f"/instances/{item['id']}").json()["tags"] == LITERAL_TAGS


# -- with API_TOKEN: hostile credentials, and validation behind the token ------------------------------------
@pytest.fixture(scope="module")
def token_server(emulator, tmp_path_factory):
    srv = ApiServer(tmp_path_factory.mktemp("hostile-token"), emulator.url, API_TOKEN=TOKEN,
                    RECONCILE_INTERVAL_SECONDS="3600")
    yield srv
    srv.stop()


HOSTILE_AUTH = [f"Bearer $(touch {PWN})", f"Bearer {TOKEN}$(id)", f"Bearer {TOKEN}\t{TOKEN}",
                f"bearer{TOKEN}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN.upper()}", f"Token {TOKEN}",
                "Bearer " + "A" * 8000, "Bearer x},{Key=Owner,Value=evil", f"Bearer {TOKEN},{TOKEN}",
                "Bearer \u00e9".encode("latin-1"), "Bearer --dry-run", "Bearer ../../etc/passwd", ""]
ALL_ROUTES = [("GET", "/instances"), ("POST", "/instances"), ("POST", "/instances/sync"),
              ("GET", "/instances/i-0123456789abcdef0"), ("GET", "/instances/i-0123456789abcdef0/events"),
              ("POST", "/instances/i-0123456789abcdef0/start"), ("POST", "/instances/i-0123456789abcdef0/stop"),
              ("DELETE", "/instances/i-0123456789abcdef0")]


@pytest.fixture(scope="module")
def token_client(token_server):
    """One client for the token server's cases, each sending its own Authorization: a client per case (httpx's
    module functions make one per call) loads the CA bundle each time, ~20 ms of CPU in this process."""
    with httpx.Client(base_url=token_server.url, timeout=60, verify=TLS) as c:
        yield c


@pytest.mark.parametrize("auth", HOSTILE_AUTH, ids=ids(HOSTILE_AUTH))
@pytest.mark.parametrize("method, path", ALL_ROUTES, ids=[f"{m} {p}" for m, p in ALL_ROUTES])
def test_hostile_credentials_are_401_everywhere(token_server, token_client, emulator, method, path, auth):
    watch = Watch(token_server, emulator)
    watch.mark()
    response = token_client.request(method, path, headers={"Authorization": auth}, json=VALID)
    assert response.status_code == 401, response.text
    assert TOKEN not in response.text
    watch.assert_untouched()


TOKEN_CORPUS = [v for v in REJECTED_AS_NAME if len(v) < 4000][::3]


@pytest.mark.parametrize("value", TOKEN_CORPUS, ids=ids(TOKEN_CORPUS))
def test_validation_still_holds_behind_a_valid_token(token_server, token_client, emulator, value):
    watch = Watch(token_server, emulator)
    watch.mark()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    api = token_client
    assert_refused(api.post("/instances", json={**VALID, "name": value}, headers=auth))
    assert_refused(api.post("/instances", json={**VALID, "tags": {"Owner": value + "\x00"}}, headers=auth))
    assert_refused(api.request("POST", f"/instances/{quote(value, safe='')}/stop", headers=auth))
    assert_refused(api.get("/instances", params={"include_terminated": value}, headers=auth))
    watch.assert_untouched()
