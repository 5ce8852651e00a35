"""Durations a person types, times a person reads, tables."""

from datetime import UTC, datetime

import pytest

from ec2cl.errors import USAGE, CliError
from ec2cl.output import minutes, next_action, relative, table

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("text, expected", [("8h", 480), ("90m", 90), ("1h30m", 90), ("2d", 2880), (" 2H ", 120),
                                            ("1d2h3m", 1563)])
def test_durations(text, expected):
    assert minutes(text, "--auto-stop") == expected


@pytest.mark.parametrize("text", ["", "8", "h", "8x", "-1h", "1.5h", "m30", "8h 30m"])
def test_a_duration_that_is_not_one_is_a_usage_error_naming_the_option(text):
    with pytest.raises(CliError) as raised:
        minutes(text, "--auto-stop")
    assert raised.value.exit_code == USAGE and raised.value.message.startswith(f"--auto-stop: {text!r} is not")


def test_relative_times():
    assert relative("2026-12-07T15:12:00.000000Z", NOW) == "in 3h 12m"
    assert relative("2026-12-07T11:55:00Z", NOW) == "5m ago"
    assert relative("2026-12-09T16:00:00Z", NOW) == "in 2d 4h"
    assert relative(None, NOW) is None and relative("soon", NOW) is None
    assert next_action({"next_action": {"action": "stop", "at": "2026-12-07T13:00:00Z", "source": "auto_stop"}},
                       NOW) == "stop in 1h (auto_stop)"


def test_a_table_aligns_columns_and_marks_empty_cells():
    assert table(("NAME", "ID"), [["web-1", "i-1"], [None, "i-22"]]).splitlines() == [
        "NAME   ID", "web-1  i-1", "-      i-22"]
