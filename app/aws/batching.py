"""One `aws` process for many: start/stop/terminate calls of the same action and region are coalesced.

EC2's StartInstances, StopInstances and TerminateInstances take up to 1,000 ids, and one `aws` process
costs about the same for one id or fifty. A transition submitted here waits at most TRANSITION_WINDOW_MS
for others of its kind (each new arrival extends the wait by the window, up to eight windows in all), then
they go out as one call. One bad id fails a whole EC2 call, so a failure is split the way Cloud Custodian
does it: the ids EC2's error names get that error, the rest are sent again without them; an error that may
be about some instances only and names none (a state, protection, IAM conditions, capacity) is retried in
halves. Errors about every instance (throttling, credentials, a timeout) are every caller's.
"""

import asyncio
import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from app.core.errors import ApiError

log = logging.getLogger("ec2_creator.batching")

MAX_IDS = 1000  # per call (EC2's limit)
WINDOW_STRETCH = 8  # a batch waits at most this many windows after its first arrival
# EC2 names the instance it refuses: "This instance 'i-…' is not in a state from which it can be stopped",
# "The instance IDs 'i-…, i-…' do not exist", "The instance 'i-…' may not be terminated".
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
# Refusals about one instance (a state, protection, an instance type that cannot do it, an id).
PER_INSTANCE = {"IncorrectInstanceState", "InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed",
                "UnsupportedOperation", "OperationNotPermitted", "IncorrectState", "InvalidInstanceState"}
# Refusals that may be about some instances only (IAM conditions on tags, capacity of one type or zone): a
# batch that gets one is split in halves, so one caller's instance never fails the others'.
MAYBE_PER_INSTANCE = PER_INSTANCE | {"UnauthorizedOperation", "InsufficientInstanceCapacity",
                                     "InsufficientCapacity", "InstanceLimitExceeded", "VcpuLimitExceeded"}


Row = TypeVar("Row", bound=Mapping[str, Any])


def by_region(rows: Iterable[Row]) -> Iterator[tuple[str | None, dict[str, Row]]]:
    """Recorded instances in the calls EC2 takes: per region (each is acted on in the region it was recorded in),
    at most MAX_IDS each, as {id: row}."""
    grouped: dict[str | None, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[row["region"]].append(row)
    for region, members in grouped.items():
        for start in range(0, len(members), MAX_IDS):
            yield region, {r["id"]: r for r in members[start:start + MAX_IDS]}


async def send(aws, script: str, response_key: str, ids: Sequence[str], region: str | None = None,
               background: bool = False) -> tuple[dict[str, dict], dict[str, ApiError]]:
    """Send `script` for `ids` (at most MAX_IDS) in as few calls as EC2's refusals allow.

    Returns (what EC2 answered per id, the error per id it refused or that failed)."""
    answered: dict[str, dict] = {}
    failed: dict[str, ApiError] = {}
    queue: list[list[str]] = [list(dict.fromkeys(ids))]
    while queue:
        batch = queue.pop(0)
        try:
            doc = await aws.run(script, *batch, region=region, background=background)
        except ApiError as exc:
            named = set(INSTANCE_ID.findall(exc.detail)) & set(batch)
            if exc.aws_error_code in PER_INSTANCE and named and len(batch) > 1:
                # Give those their error, send the rest again without them.
                failed |= dict.fromkeys(named, exc)
                rest = [i for i in batch if i not in named]
                log.info("%s: EC2 refused %s (%s); sending the other %d again", script, ", ".join(sorted(named)),
                         exc.aws_error_code, len(rest))
                if rest:
                    queue.insert(0, rest)
            elif exc.aws_error_code in MAYBE_PER_INSTANCE and len(batch) > 1:
                half = len(batch) // 2  # whose it is cannot be told: halves, until it can
                queue[:0] = [batch[:half], batch[half:]]
            else:
                failed |= dict.fromkeys(batch, exc)
            continue
        entries = {e.get("InstanceId"): e for e in doc.get(response_key) or [] if isinstance(e, dict)}
        for instance_id in batch:
            answered[instance_id] = entries.get(instance_id, {})
    return answered, failed


@dataclass
class _Batch:
    ids: list[str] = field(default_factory=list)
    waiters: dict[str, list[asyncio.Future]] = field(default_factory=dict)
    first: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)


class Coalescer:
    """Collects transitions per (script, region) for a short window, then sends each group as one call."""

    def __init__(self, aws, window_seconds: float) -> None:
        self.aws = aws
        self.window = window_seconds
        self._open: dict[tuple[str, str, str | None], _Batch] = {}
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, script: str, response_key: str, instance_id: str, region: str | None) -> dict:
        """EC2's answer for this instance (its entry of `response_key`), or its ApiError raised."""
        key = (script, response_key, region)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch()
            self._spawn(self._flush_when_quiet(key, batch))
        future = asyncio.get_running_loop().create_future()
        if instance_id not in batch.waiters:
            batch.ids.append(instance_id)
        batch.waiters.setdefault(instance_id, []).append(future)
        batch.last = time.monotonic()
        if len(batch.ids) >= MAX_IDS:
            self._close(key, batch)
        return await future

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_when_quiet(self, key: tuple, batch: _Batch) -> None:
        while self._open.get(key) is batch:
            now = time.monotonic()
            due = min(batch.last + self.window, batch.first + self.window * WINDOW_STRETCH)
            if now >= due:
                self._close(key, batch)
                break
            await asyncio.sleep(due - now)

    def _close(self, key: tuple, batch: _Batch) -> None:
        if self._open.get(key) is batch:
            del self._open[key]
            self._spawn(self._send(key, batch))

    async def _send(self, key: tuple, batch: _Batch) -> None:
        script, response_key, region = key
        try:
            answered, failed = await send(self.aws, script, response_key, batch.ids, region)
        except BaseException as exc:  # noqa: BLE001 - cancelled at shutdown, or a bug: every caller learns it
            for waiters in batch.waiters.values():
                for future in waiters:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            raise
        if len(batch.ids) > 1:
            log.info("%s: one call for %d instances", script, len(batch.ids))
        for instance_id, waiters in batch.waiters.items():
            for future in waiters:
                if future.done():
                    continue
                if instance_id in failed:
                    future.set_exception(failed[instance_id])
                else:
                    future.set_result(answered.get(instance_id, {}))
