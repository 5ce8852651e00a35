"""Tables for people, JSON for scripts, and the few units a person types (8h, 90m) or reads (in 3h 12m)."""

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import typer

from ec2cl.errors import USAGE, CliError, clean


class Output(StrEnum):
    table = "table"
    json = "json"


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart; an empty cell is `-`."""
    cells = [[str(h) for h in headers]] + [["-" if v is None or v == "" else clean(str(v)) for v in row]
                                           for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    typer.echo(table(headers, rows))


_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?$")


def minutes(text: str, option: str) -> int:
    """`8h`, `90m`, `1h30m`, `2d` as minutes; anything else a usage error naming the option."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or not match or not any(match.groupdict().values()):
        raise CliError(f"{option}: {text!r} is not a duration: give it like 8h, 90m or 1h30m", USAGE, "bad_duration")
    parts = {k: int(v or 0) for k, v in match.groupdict().items()}
    return parts["d"] * 1440 + parts["h"] * 60 + parts["m"]


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def span(seconds: float) -> str:
    """3h 12m, 45m, 2d 4h, 30s."""
    seconds = int(abs(seconds))
    days, hours, mins = seconds // 86400, seconds % 86400 // 3600, seconds % 3600 // 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    return f"{mins}m" if mins else f"{seconds}s"


def relative(text: str | None, now: datetime | None = None) -> str | None:
    """An API time (UTC) as `in 3h 12m` or `5m ago`."""
    at = parse_time(text)
    if at is None:
        return None
    delta = (at - (now or datetime.now(UTC))).total_seconds()
    return f"in {span(delta)}" if delta >= 0 else f"{span(delta)} ago"


def next_action(instance: dict, now: datetime | None = None) -> str | None:
    """`stop in 3h 12m (auto_stop)`: what comes next for it."""
    action = instance.get("next_action")
    if not action:
        return None
    return f"{action['action']} {relative(action['at'], now)} ({action['source']})"


def money(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
