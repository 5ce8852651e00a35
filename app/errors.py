"""Domain errors and the one error envelope of the API.

Every error body is ``{"detail": <a sentence to act on>, "code": <machine code>}``, plus
``aws_error_code`` when AWS refused, and ``errors`` (field list) for schema failures.
"""

import logging
import re
import sqlite3

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("ec2_creator")


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
        extra: dict[str, str] | None = None,
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


# Declared on routes so the OpenAPI schema documents the envelope.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "aws_error_code": {"type": "string"},
        "instance_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["detail", "code"],
}


def error_responses(*statuses: int) -> dict:
    return {
        status: {"description": "Error", "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for status in statuses
    }


def _json(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


def _documented_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for this path (its own entry first, else a template)."""
    paths = request.app.openapi()["paths"]
    path = request.url.path
    if path not in paths:
        path = next((t for t in paths if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", t), path)), path)
    return sorted(method.upper() for method in paths.get(path, {}))


def install_error_handlers(app: FastAPI) -> None:
    """Map every error, ours and the framework's, to the one envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status_code, exc.body(), exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "request"
        detail = f"Invalid request: {where}: {first['msg']}."
        return _json(422, {"detail": detail, "code": "validation_error", "errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "body_too_large"}
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such route. See /docs for the API."
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; RFC 9110 wants all of them.
            headers = {**(headers or {}), "Allow": ", ".join(_documented_methods(request))}
        return _json(exc.status_code, {"detail": detail, "code": codes.get(exc.status_code, "http_error")},
                     headers)

    async def _store(_: Request, exc: Exception) -> JSONResponse:
        log.error("database error: %s", exc)
        return _json(503, {"detail": f"The database cannot be used right now ({exc}); nothing was "
                                     "changed in EC2 by this request. Retry shortly.", "code": "store_unavailable"},
                     {"Retry-After": "5"})

    for store_error in (sqlite3.Error, psycopg.Error):
        app.add_exception_handler(store_error, _store)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return _json(500, {"detail": "Internal error; see the server log.", "code": "internal_error"})
