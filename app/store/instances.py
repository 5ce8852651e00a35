"""Queries of the instances table: what is recorded of each instance, what a sweep, the auto-stop, the idle
alarm keeper and the spend ledger read of it."""

import json
from typing import Any

import sqlalchemy as sa

from app.store.base import StoreBase
from app.store.rows import EventRow, InstanceRow, InstanceState
from app.store.tables import EVENT_FIELDS, INSTANCE_FIELDS, JSON_FIELDS, instances

# What the API shows of an instance, in the response model's order (tests/store/test_queries.py checks that
# it is app/instances/schemas.py's STORED_FIELDS: the store sits below the domains and does not import them).
PUBLIC_FIELDS = ("id", "name", "public_ip", "ssh_string", "ssh_unavailable", "ssh_from", "login_user", "state", "ami",
                 "instance_type", "storage_gb", "security_group_id", "tags", "backend_used", "region", "created_at",
                 "updated_at", "auto_stop_minutes", "stop_at", "stop_when_idle", "idle_alarm", "owner", "schedule",
                 "schedule_error", "next_action")
# The columns next_action is made of (it is not stored: see next_action()).
NEXT_ACTION_COLUMNS = ("stop_source", "next_start_at")
ENDED = tuple(s.value for s in InstanceState if s.ended)
ACTIVE = f"state NOT IN {ENDED!r}"
# An instance that is shutting down or ended needs no idle alarm any more.
ALARMABLE = f"state NOT IN {(InstanceState.SHUTTING_DOWN.value, *ENDED)!r}"
WANT = f"(CASE WHEN {ALARMABLE} THEN stop_when_idle END)"  # the setting CloudWatch should hold
# The alarm keeper's rows: this EC2's, of this account (a row whose account is not known yet counts).
ALARM_SCOPE = ("region = :region AND endpoint = :endpoint AND "
               "(CAST(:account AS TEXT) IS NULL OR account IS NULL OR account = :account)")
# Evaluated inside the writing statement, under the write lock: revisions grow in commit order, so a reader
# that saw revision N has seen every row written before it.
NEXT_REV = "(SELECT COALESCE(MAX(rev), 0) + 1 FROM instances)"
EVENT_COLUMNS = ", ".join(EVENT_FIELDS)



def scope(region: str | None, endpoint: str) -> tuple[str, dict[str, Any]]:
    """The rows of one EC2: an endpoint and a region, or (region None) every region recorded for the endpoint.
    Another endpoint's rows never match (a sandbox's fake credentials must never reach real AWS)."""
    if region is None:
        return "endpoint = :endpoint AND region IS NOT NULL", {"endpoint": endpoint}
    return "region = :region AND endpoint = :endpoint", {"region": region, "endpoint": endpoint}


def decode(column: str, text: str | None) -> Any:
    """A JSON column's value; its default when empty or unreadable (written by something else)."""
    default = JSON_FIELDS[column]
    if not text:
        return default
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return default
    return value if isinstance(value, dict) else default


def canonical_json(value: Any) -> str | None:
    """The one text of a JSON value (compared as text in SQL); None stays NULL."""
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def encode(fields: dict[str, Any]) -> dict[str, Any]:
    """Values as stored: JSON as text, booleans as 0/1, states as their text."""
    fields = dict(fields)
    if "tags" in fields:
        fields["tags"] = json.dumps(fields["tags"] or {}, sort_keys=True)
    for column in ("stop_when_idle", "idle_alarm"):
        if column in fields:
            fields[column] = canonical_json(fields[column])
    return {k: int(v) if isinstance(v, bool) else (str(v) if isinstance(v, str) else v) for k, v in fields.items()}


def instance_row(row: dict[str, Any]) -> InstanceRow:
    item = dict(row)
    for column in JSON_FIELDS:
        item[column] = decode(column, item.get(column))
    item["state"] = InstanceState(item["state"] or InstanceState.PENDING)
    return InstanceRow(**item)  # type: ignore[typeddict-item]  # the columns are INSTANCE_FIELDS


def next_action(row: Any) -> dict[str, str] | None:
    """What comes next for an instance: its stop (stop_at, for its auto-stop or its schedule) while it runs, its
    schedule's next start while it is stopped; None when nothing is due."""
    if row["state"] in ("pending", "running") and row["stop_at"]:
        return {"action": "stop", "at": row["stop_at"], "source": row["stop_source"] or "auto_stop"}
    if row["state"] == "stopped" and row["next_start_at"]:
        return {"action": "start", "at": row["next_start_at"], "source": "schedule"}
    return None


def event_row(row: dict[str, Any]) -> EventRow:
    return EventRow(**row)  # type: ignore[typeddict-item]


class InstanceQueries(StoreBase):
    def get_instance(self, instance_id: str) -> InstanceRow | None:
        row = self._one("SELECT * FROM instances WHERE id = :id", {"id": instance_id})
        return instance_row(row) if row is not None else None

    def require_instance(self, instance_id: str) -> InstanceRow:
        """A row this code has just written (or locked): its absence is a bug, not a 404."""
        row = self.get_instance(instance_id)
        if row is None:
            raise LookupError(f"instance {instance_id} is not recorded")
        return row

    def count_by_state(self) -> dict[str, int]:
        with self._reading() as conn:
            return {r[0] or "pending": r[1] for r in conn.execute(
                sa.text("SELECT state, COUNT(*) FROM instances GROUP BY state"))}

    def get_instances(self, ids: list[str]) -> dict[str, InstanceRow]:
        """The recorded rows among `ids`, by id (in one read)."""
        found: dict[str, InstanceRow] = {}
        query = sa.text("SELECT * FROM instances WHERE id IN :ids").bindparams(sa.bindparam("ids", expanding=True))
        with self.read() as conn:
            for start in range(0, len(ids), 500):
                for r in conn.execute(query, {"ids": ids[start:start + 500]}).mappings():
                    found[r["id"]] = instance_row(dict(r))
        return found

    def list_instances(self, include_terminated: bool = False) -> list[InstanceRow]:
        where = "" if include_terminated else f"WHERE {ACTIVE}"
        return [instance_row(r) for r in self._all(f"SELECT * FROM instances {where} ORDER BY created_at, id")]

    def list_instances_json(self, include_terminated: bool = False, owner: str | None = None) -> bytes:
        """`{"instances": [...]}` rendered once per change of the table, not once per request; with `owner`,
        only that owner's instances (rendered and cached per owner)."""
        generation = self.generation  # read before the query: a later write invalidates the result
        cached = self._list_cache.get((include_terminated, owner))
        if cached is not None and cached[0] == generation:
            return cached[1]
        conditions = ([] if include_terminated else [ACTIVE]) + ([] if owner is None else ["owner = :owner"])
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        stored = [c for c in PUBLIC_FIELDS if c != "next_action"] + list(NEXT_ACTION_COLUMNS)
        with self._reading() as conn:
            rows = conn.execute(sa.text(f"SELECT {', '.join(stored)} FROM instances {where} "
                                        "ORDER BY created_at, id"), {"owner": owner}).all()
        items = []
        for row in rows:
            found = dict(zip(stored, row, strict=True))
            for column in JSON_FIELDS:
                found[column] = decode(column, found[column])
            found["next_action"] = next_action(found)
            items.append({c: found[c] for c in PUBLIC_FIELDS})
        body = json.dumps({"instances": items}, separators=(",", ":")).encode()
        self._list_cache[(include_terminated, owner)] = (generation, body)
        return body

    def revision(self) -> int:
        """The newest revision of any instance row (every write bumps it, on every replica): what the dashboard's
        live stream watches."""
        return int(self._scalar("SELECT COALESCE(MAX(rev), 0) FROM instances") or 0)

    def last_started(self) -> dict[str, str]:
        """When each instance last entered pending or running (its uptime's start), in one read."""
        return {r["instance_id"]: r["at"] for r in self._all(
            "SELECT instance_id, MAX(at) AS at FROM instance_events WHERE to_state IN ('pending', 'running') "
            "AND (from_state IS NULL OR from_state NOT IN ('pending', 'running')) GROUP BY instance_id")}

    def tracked_ids(self, region: str, endpoint: str, account: str) -> dict[str, InstanceRow]:
        """Every instance of this EC2 (endpoint, region, account) not yet terminated, by id: what a sweep
        judges. Rows of another EC2, or recorded before the scope was kept, are never judged here."""
        rows = self._all(f"SELECT * FROM instances WHERE {ACTIVE} AND region = :region AND endpoint = :endpoint "
                         "AND account = :account", {"region": region, "endpoint": endpoint, "account": account})
        return {r["id"]: instance_row(r) for r in rows}

    def has_instances_in(self, endpoint: str) -> bool:
        """Whether this endpoint has a live instance on record, in any region."""
        return self._one(f"SELECT 1 FROM instances WHERE {ACTIVE} AND endpoint = :endpoint AND region IS NOT NULL "
                         "LIMIT 1", {"endpoint": endpoint}) is not None

    def regions_in_use(self, endpoint: str, account: str | None) -> set[str]:
        """The regions of this endpoint where the account has a live instance on record (or one whose account
        is not known yet), or a launch whose outcome is not settled (pending, or lost: its instance may still
        show): what a sweep lists besides the server's own region. Another endpoint's are never included."""
        mine = "account IS NULL" if account is None else "(account IS NULL OR account = :account)"
        rows = self._all(
            f"SELECT DISTINCT region FROM instances WHERE {ACTIVE} AND endpoint = :endpoint AND region IS NOT NULL "
            f"AND {mine} UNION SELECT DISTINCT region FROM launches WHERE status IN ('pending', 'lost') "
            "AND endpoint = :endpoint AND region IS NOT NULL", {"endpoint": endpoint, "account": account})
        return {r["region"] for r in rows}

    def set_missing(self, instance_id: str, missed_sweeps: int, missing_since: str | None) -> None:
        """Bookkeeping of a tracked instance a sweep did not see (no public field changes)."""
        self._run("UPDATE instances SET missed_sweeps = :missed, missing_since = :since WHERE id = :id",
                  {"missed": missed_sweeps, "since": missing_since, "id": instance_id})

    def upsert_instance(self, fields: dict[str, Any]) -> None:
        fields = encode(fields)
        columns = [c for c in INSTANCE_FIELDS if c in fields and c != "rev"]
        values = ", ".join(f":{c}" for c in columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in [*columns, "rev"] if c not in ("id", "created_at"))
        self._run(f"INSERT INTO instances ({', '.join(columns)}, rev) VALUES ({values}, {NEXT_REV}) "
                  f"ON CONFLICT (id) DO UPDATE SET {updates}", {c: fields[c] for c in columns}, instances=True)
        self._written()

    def update_instance(self, instance_id: str, fields: dict[str, Any]) -> None:
        if not fields:
            return
        fields = encode(fields)
        fields.pop("rev", None)
        fields.pop("id", None)
        sets = ", ".join(f"{c} = :{c}" for c in fields)
        self._run(f"UPDATE instances SET {sets}, rev = {NEXT_REV} WHERE id = :id__", {**fields, "id__": instance_id},
                  instances=True)
        self._written()

    def ledger(self, region: str | None, endpoint: str, since: str,
               after_rev: int | None = None) -> tuple[list[InstanceRow], dict[str, list[EventRow]]]:
        """What the spend ledger reads, in one transaction, with their events in order: this EC2's
        instances (of `region`; None: of every region of the endpoint) not terminated or changed since
        `since`; or, with `after_rev`, only those written after that revision."""
        where, params = scope(region, endpoint)
        if after_rev is None:
            which, params = f"{where} AND ({ACTIVE} OR updated_at >= :since)", {**params, "since": since}
        else:
            which, params = f"{where} AND rev > :after_rev", {**params, "after_rev": after_rev}
        with self.read():
            rows = [instance_row(r) for r in self._all(f"SELECT * FROM instances WHERE {which}", params)]
            events: dict[str, list[EventRow]] = {}
            for item in self._all(f"SELECT instance_id, {EVENT_COLUMNS} FROM instance_events WHERE instance_id IN "
                                  f"(SELECT id FROM instances WHERE {which}) ORDER BY seq", params):
                events.setdefault(item.pop("instance_id"), []).append(event_row(item))
        return rows, events

    def due_for_stop(self, now: str, region: str | None, endpoint: str) -> list[InstanceRow]:
        """Running instances of this EC2 (of `region`; None: of every region of the endpoint) whose stop_at has
        come (EC2 cannot stop a pending one yet)."""
        where, params = scope(region, endpoint)
        return [instance_row(r) for r in self._all(
            "SELECT * FROM instances WHERE stop_at IS NOT NULL AND stop_at <= :now AND state = 'running' "
            f"AND {where} ORDER BY stop_at", {**params, "now": now})]

    def next_stop_at(self, region: str | None, endpoint: str) -> str | None:
        where, params = scope(region, endpoint)
        return self._scalar("SELECT MIN(stop_at) FROM instances WHERE stop_at IS NOT NULL AND state = 'running' "
                            f"AND {where}", params)

    def stopping_before(self, horizon: str, region: str | None, endpoint: str) -> list[dict]:
        """Running instances of this EC2 (None: of every region of the endpoint) whose auto-stop comes before
        `horizon`."""
        where, params = scope(region, endpoint)
        return self._all("SELECT id, stop_at, stop_source, state, public_ip FROM instances WHERE stop_at IS NOT NULL "
                         f"AND stop_at <= :horizon AND state IN ('pending', 'running') AND {where}",
                         {**params, "horizon": horizon})

    # -- idle alarms (CloudWatch) ---------------------------------------------------------------
    def alarm_work(self, region: str, endpoint: str, account: str | None, now: str) -> list[InstanceRow]:
        """Instances of this EC2 (and account) whose alarm in CloudWatch is not what is asked (none once it is
        shutting down), due now; and those whose shown idle_alarm no longer fits (nothing to send for them)."""
        status, error = self._json_text_of("idle_alarm", "status"), self._json_text_of("idle_alarm", "error")
        return [instance_row(r) for r in self._all(
            f"SELECT * FROM instances WHERE {ALARM_SCOPE} AND ((COALESCE({WANT}, '') != COALESCE(alarm_held, '') "
            f"AND (alarm_retry_at IS NULL OR alarm_retry_at <= :now)) OR ({WANT} IS NULL AND alarm_held IS NULL AND "
            f"idle_alarm IS NOT NULL) OR ({WANT} = alarm_held AND (idle_alarm IS NULL OR "
            f"{status} != 'set' OR {error} IS NOT NULL))) ORDER BY id",
            {"region": region, "endpoint": endpoint, "account": account, "now": now})]

    def _json_text_of(self, column: str, key: str) -> str:
        """SQL for the text of `key` in a JSON object column: a TEXT column read as JSON (PostgreSQL casts
        it; SQLite's json functions take the text as it is, and CAST(... AS JSON) would make it a number)."""
        as_json = sa.cast if self.is_postgres else sa.type_coerce
        expression = as_json(instances.c[column], sa.JSON)[key].as_string()
        return str(expression.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}))

    def next_alarm_retry(self, region: str, endpoint: str, account: str | None) -> str | None:
        return self._scalar(
            f"SELECT MIN(alarm_retry_at) FROM instances WHERE {ALARM_SCOPE} AND alarm_retry_at IS NOT NULL AND "
            f"COALESCE({WANT}, '') != COALESCE(alarm_held, '')",
            {"region": region, "endpoint": endpoint, "account": account})

    def with_alarms(self, region: str, endpoint: str, account: str | None) -> list[InstanceRow]:
        """Instances of this EC2 (and account) that ask for an idle alarm or are recorded as holding one."""
        return [instance_row(r) for r in self._all(
            f"SELECT * FROM instances WHERE {ALARM_SCOPE} AND ({WANT} IS NOT NULL OR alarm_held IS NOT NULL)",
            {"region": region, "endpoint": endpoint, "account": account})]
