"""GET /notifications: recent deliveries, with no secret in them (a channel is `email` or `url<N> (scheme)`)."""

from pydantic import BaseModel, Field


class Delivery(BaseModel):
    id: int
    key: str = Field(description="What it is about: `event:<n>` (an instance event), "
                                 "`auto_stop_warning:<id>:<stop_at>` or `budget_<80|100>:<month>:<scope>`")
    event: str | None = Field(description="create, start, stop, delete, auto_stop, auto_stop_warning, "
                                          "stopped_outside, started_outside, terminated_outside, adopted, came_back, "
                                          "budget_80, budget_100")
    instance_id: str | None
    channel: str = Field(description="`email`, or `url<N> (<scheme>)` for the N-th of NOTIFY_URLS")
    status: str = Field(description="pending (retried with backoff), sent, or failed (given up)")
    attempts: int
    created_at: str
    sent_at: str | None
    next_at: str | None = Field(description="When a pending delivery is tried next")
    last_error: str | None = Field(description="Why the last attempt failed (secrets redacted)")


class Notifications(BaseModel):
    enabled: bool = Field(description="Whether any channel is configured (SMTP_HOST/NOTIFY_EMAIL_TO, NOTIFY_URLS)")
    channels: list[str]
    deliveries: list[Delivery]
