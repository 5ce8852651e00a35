"""The patterns of the API's text fields, and each one in words: a 422 says which characters are allowed
(app/api/errors.py) instead of showing the regex. The schemas (app/*/schemas.py) declare their fields with them."""

import re
from dataclasses import dataclass

# EC2 tag values allow letters, digits, spaces and _ . : / = + - @ ; names use the same set.
EC2_TEXT = r"^[A-Za-z0-9 _.:/=+\-@]*$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:/=+\-@]*$"
WORD_PATTERN = r"^[a-z0-9][a-z0-9.\-]*$"  # ami and instance_type: what the scripts take as one word
INSTANCE_ID_PATTERN = r"^i-[0-9a-f]{8,17}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"
SCHEDULE_NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"  # a schedule's name (also an EC2 tag value: Schedule=<name>)
# A schedule's fields (app/schedules/calendar.py checks what a pattern cannot: the zone exists, the date does).
_DAY = r"(mon|tue|wed|thu|fri|sat|sun)"
DAYS_PATTERN = rf"^{_DAY}(-{_DAY}|#[1-5]|L)?( ?, ?{_DAY}(-{_DAY}|#[1-5]|L)?)*$"
HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9][A-Za-z0-9_+\-]*)*$"


@dataclass(frozen=True)
class PatternHint:
    """A pattern in words, for a 422 that says which characters are allowed instead of showing the regex."""

    allowed: str  # what the value may hold
    char: str | None = None  # one allowed character (a regex): the first one that is not gets named

    def explain(self, value: object) -> str:
        if isinstance(value, str) and self.char is not None:
            bad = next((c for c in value if not re.fullmatch(self.char, c)), None)
            if bad is not None:
                return f"{bad!r} is not allowed; use {self.allowed}"
        return f"use {self.allowed}"


_EC2_CHAR = r"[A-Za-z0-9 _.:/=+\-@]"
_EC2_WORDS = "letters, digits, spaces and _ . : / = + - @"


# `Key=Value` or `Key` (the key in EC2's tag text; the value may hold `=` itself).
TAG_FILTER_PATTERN = r"^[A-Za-z0-9 _.:/+\-@]{1,128}(=[A-Za-z0-9 _.:/=+\-@]{0,256})?$"

PATTERN_HINTS: dict[str, PatternHint] = {
    NAME_PATTERN: PatternHint(f"{_EC2_WORDS}, starting with a letter or digit", _EC2_CHAR),
    EC2_TEXT: PatternHint(_EC2_WORDS, _EC2_CHAR),
    WORD_PATTERN: PatternHint("lowercase letters, digits, . and -, starting with a letter or digit (like "
                              "amazon-linux-2023 or t3.micro)", r"[a-z0-9.\-]"),
    INSTANCE_ID_PATTERN: PatternHint("an EC2 instance id: i- and 8 to 17 lowercase hex digits, like "
                                     "i-0123456789abcdef0"),
    TAG_FILTER_PATTERN: PatternHint(f"Key=Value or Key, in {_EC2_WORDS} (no = in the key)", _EC2_CHAR),
    IDEMPOTENCY_KEY_PATTERN: PatternHint("printable ASCII characters without spaces", r"[\x21-\x7e]"),
    SCHEDULE_NAME_PATTERN: PatternHint("letters, digits, _ . and - (1 to 64)", r"[A-Za-z0-9_.\-]"),
    DAYS_PATTERN: PatternHint("days separated by commas, each mon..sun, a range like mon-fri, the nth weekday of "
                              "the month like mon#1 (#1-#5), or the last one like friL"),
    HHMM_PATTERN: PatternHint("a time HH:MM, 00:00 to 23:59"),
    DATE_PATTERN: PatternHint("a date YYYY-MM-DD"),
    ZONE_PATTERN: PatternHint("an IANA time zone such as UTC, Europe/Berlin or America/New_York"),
}
