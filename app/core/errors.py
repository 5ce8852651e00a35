"""The domain's errors: each carries an HTTP status, a machine code and a sentence a person can act on.

app/api/errors.py turns them into the API's one error envelope; nothing here knows about HTTP frameworks.
"""

from typing import Any


class ApiError(Exception):
    """An error with an HTTP status, a machine code and a sentence a person can act on."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        aws_error_code: str | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code
        self.aws_error_code = aws_error_code
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more fields of the body, e.g. instance_id
        if retry_after:
            self.headers["Retry-After"] = str(retry_after)

    def body(self) -> dict:
        body: dict = {"detail": self.detail, "code": self.code}
        if self.aws_error_code:
            body["aws_error_code"] = self.aws_error_code
        return {**body, **self.extra}


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """The caller is known, but their role does not allow this."""

    status_code = 403
    code = "forbidden"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PolicyViolation(ApiError):
    """The request would leave the free tier (or breaks another local policy)."""

    status_code = 400
    code = "free_tier_violation"


class BadRequest(ApiError):
    status_code = 400
    code = "bad_request"


class Unavailable(ApiError):
    status_code = 503
    code = "aws_unavailable"


class UpstreamTimeout(ApiError):
    status_code = 504
    code = "aws_timeout"


class UpstreamError(ApiError):
    status_code = 502
    code = "aws_error"
