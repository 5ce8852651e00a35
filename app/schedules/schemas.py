"""Schedules' request and response models. The calendar (app/schedules/calendar.py) checks every field, so a 422
names the field at fault (`timezone`, `periods[0].days`, `holidays[1]`) and says what is allowed."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator, model_validator

from app.api.fields import DATE_PATTERN, DAYS_PATTERN, HHMM_PATTERN, SCHEDULE_NAME_PATTERN, ZONE_PATTERN
from app.schedules.calendar import CalendarError, build, parse_days, parse_hhmm, parse_zone

ScheduleName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=SCHEDULE_NAME_PATTERN)]
HHMM = Annotated[str, StringConstraints(max_length=5, pattern=HHMM_PATTERN)]
MAX_PERIODS, MAX_HOLIDAYS = 20, 366


class Period(BaseModel):
    """When instances run: on `days`, from `start` to `stop` (local time in the schedule's time zone). Leave out
    `start` for a stop-only period or `stop` for a start-only one; a `stop` earlier than `start` runs overnight."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [{"required": ["start"]},
                                                                           {"required": ["stop"]}]})

    days: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=DAYS_PATTERN)] = Field(
        description="`mon-fri`, `sat,sun`, `mon#1` (the first Monday of the month, #1-#5), `friL` (the last Friday), "
                    "or a list of them separated by commas", examples=["mon-fri"])
    start: HHMM | None = Field(None, description="HH:MM (00:00-23:59): when they start", examples=["09:00"])
    stop: HHMM | None = Field(None, description="HH:MM: when they stop (not after start: the next day)",
                              examples=["18:00"])

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        _checked(parse_days, value)
        return value

    @field_validator("start", "stop")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        _checked(parse_hhmm, value, "time")
        return value

    @model_validator(mode="after")
    def _start_or_stop(self) -> "Period":
        if self.start is None and self.stop is None:
            raise ValueError("a period needs a start, a stop or both")
        return self


def _checked(parse, *args) -> None:
    try:
        parse(*args)
    except CalendarError as exc:
        raise ValueError(str(exc)) from None


class ScheduleBody(BaseModel):
    """A schedule's definition (PUT replaces all of it)."""

    model_config = ConfigDict(extra="forbid")

    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ZONE_PATTERN)] = Field(
        "UTC", description="An IANA time zone (UTC, Europe/Berlin, America/New_York): the periods' times are its "
                           "wall-clock times", examples=["Europe/Berlin"])
    periods: list[Period] = Field(min_length=1, max_length=MAX_PERIODS,
                                  description="When its instances run; periods may not overlap")
    holidays: list[Annotated[str, StringConstraints(min_length=10, max_length=10, pattern=DATE_PATTERN)]] = Field(
        [], max_length=MAX_HOLIDAYS, description="Days off (YYYY-MM-DD, in the schedule's time zone): nothing "
                                                 "starts; a running period stops at the day's first minute",
        examples=[["2026-12-24", "2026-12-25"]])
    respect_manual_stop: StrictBool = Field(
        True, description="true: an instance stopped by hand while a period runs stays stopped until the next "
                          "period starts; false: the schedule starts it again at its next check")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        _checked(parse_zone, value)
        return value

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: list[str]) -> list[str]:
        try:
            build("UTC", [{"days": "mon", "start": "00:00"}], value)
        except CalendarError as exc:
            raise ValueError(f"{exc.field}: {exc}") from None
        return sorted(set(value))

    @model_validator(mode="after")
    def _no_overlap(self) -> "ScheduleBody":
        try:
            build(self.timezone, [p.model_dump() for p in self.periods], self.holidays)
        except CalendarError as exc:
            raise ValueError(f"{exc.field}: {exc}") from None
        return self


SCHEDULE_EXAMPLE = {"name": "office-hours", "timezone": "Europe/Berlin",
                    "periods": [{"days": "mon-fri", "start": "09:00", "stop": "18:00"}],
                    "holidays": ["2026-12-24", "2026-12-25"], "respect_manual_stop": True}


class ScheduleCreate(ScheduleBody):
    """POST /schedules: a new schedule."""

    name: ScheduleName = Field(description="1-64 of letters, digits, _ . and - (also the EC2 tag Schedule=<name>)",
                               examples=["office-hours"])


class Schedule(ScheduleCreate):
    created_at: str
    updated_at: str


class ScheduleList(BaseModel):
    schedules: list[Schedule]


class PreviewAction(BaseModel):
    at: str = Field(description="When (UTC)")
    action: Literal["start", "stop"]
    instance_ids: list[str] = Field(description="The instances it would start or stop (those you may see)")


class Preview(BaseModel):
    """What a schedule would do over the next `days` days, and what that saves."""

    name: str
    timezone: str
    start: str = Field(description="The window's start (now, UTC)")
    end: str
    days: int
    actions: list[PreviewAction]
    running_hours: float = Field(description="Hours each instance would run in the window under this schedule")
    estimated_savings_usd: float = Field(
        description="Compute (and public IPv4) not spent against running the same instances all the time, priced by "
                    "the spend guard's price file; storage costs the same either way")
