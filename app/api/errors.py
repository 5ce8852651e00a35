"""The one error envelope of the API: the handlers that turn domain errors (app/core/errors.py), schema
failures and store failures into it.

Every error body is ``{"detail": <a sentence to act on>, "code": <machine code>}``, plus
``aws_error_code`` when AWS refused, and ``errors`` (field list) for schema failures.
"""

import difflib
import logging
import re
import typing
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.fields import NAME_PATTERN, PATTERN_HINTS
from app.core.errors import ApiError
from app.store.engine import STORE_ERRORS, store_error_reason

log = logging.getLogger("ec2_creator")


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

def _error_statuses() -> dict[int, tuple[str, tuple[str, ...], dict]]:
    """Each error status a route declares: what it means, every `code` it carries, and a body as the server
    sends it. tests/api/test_openapi.py checks that every code the app raises is listed here."""
    return {
        400: ("Refused before anything was sent to EC2 (the free-tier policy, a tag or stop_at rule, a body that "
              "cannot be read), or a parameter EC2 rejected; the detail says what to change.",
              ("instance_type_not_allowed", "storage_not_free_tier", "instance_type_not_free_tier",
               "ami_alias_unavailable", "ami_not_free_tier", "architecture_mismatch", "price_unknown",
               "too_many_instances", "reserved_tag_key", "too_many_tags", "stop_at_in_past", "stop_at_out_of_range",
               "key_pair_missing", "aws_bad_parameter", "invalid_body", "snooze_in_past", "snooze_too_far"),
              {"detail": "storage_gb must be between 8 and 30 GB (the free-tier EBS allowance is 30 GB); got 31.",
               "code": "storage_not_free_tier"}),
        401: ("Only when the server has API_TOKEN or API_TOKENS_FILE set: the bearer token is missing or wrong.",
              ("unauthorized",),
              {"detail": "Missing or wrong bearer token: send 'Authorization: Bearer <token>' (API_TOKEN, or your "
                         "own token from API_TOKENS_FILE).", "code": "unauthorized"}),
        403: ("A user's token on an admin's route; or, on a server without tokens, a request a web page could "
              "have sent on another site's behalf; or (`aws_access_denied`) AWS denied the server's credentials an "
              "IAM permission this call needs: the detail names the action, docs/iam-policy.json grants it.",
              ("admin_only", "forbidden", "host_not_allowed", "cross_site_request", "proxied_request",
               "aws_access_denied", "csrf_failed"),
              {"detail": "'alice' is a user: this route needs an admin token.", "code": "admin_only"}),
        404: ("No such instance in the record (or someone else's), no such schedule, or no such route.",
              ("instance_not_found", "schedule_not_found", "not_found"),
              {"detail": "No instance 'i-0123456789abcdef0' is tracked. GET /instances lists the known ones.",
               "code": "instance_not_found"}),
        409: ("The instance's state, its recorded EC2 (endpoint, region, account), the budget or an "
              "Idempotency-Key does not allow it; or a schedule's name is taken, or it is still attached "
              "(`schedule_in_use` lists the instances in `instance_ids`).",
              ("wrong_state", "instance_gone", "other_endpoint", "other_region", "other_account", "budget_exceeded",
               "idempotency_key_reused", "idempotent_request_failed", "launch_in_progress", "no_ssh_group",
               "no_stop_due", "schedule_exists", "schedule_in_use"),
              {"detail": "Cannot start instance i-0123456789abcdef0: it is terminated.", "code": "wrong_state"}),
        422: ("The request does not match the schema: `detail` names the first problem and where it is (for a "
              "body that is not JSON: its line and column), every unknown or missing field at once, or, for a body "
              "sent without `Content-Type: application/json`, that header; `errors` lists them all. "
              "`unknown_schedule`: the `schedule` named does not exist (GET /schedules lists them).",
              ("validation_error", "unknown_schedule"),
              validation_body([{"type": "string_pattern_mismatch", "loc": ("body", "name"), "input": "web$1",
                                "msg": "", "ctx": {"pattern": NAME_PATTERN}}], None)),
        502: ("AWS or the AWS CLI answered in a way the server cannot use; AWS's own error code is in "
              "`aws_error_code` when it gave one.",
              ("aws_error", "aws_bad_output", "aws_cli_failed", "aws_cli_outdated", "aws_cli_missing",
               "script_usage", "my_ip_unavailable"),
              {"detail": "EC2 refused the request. AWS said: The instance 'i-0123456789abcdef0' may not be "
                         "terminated. Modify its 'disableApiTermination' instance attribute and try again.",
               "code": "aws_error", "aws_error_code": "OperationNotPermitted"}),
        503: ("Not now: EC2, the AWS CLI slots, the database or the tokens file cannot serve it; retry after "
              "`Retry-After` seconds when that header is sent. `record_failed` carries `instance_id`.",
              ("endpoint_unreachable", "no_credentials", "no_region", "aws_throttled", "aws_capacity",
               "aws_credentials", "aws_busy", "instance_not_visible_yet", "record_failed", "store_unavailable",
               "sweep_busy", "instance_busy", "tokens_file_invalid", "my_ip_unavailable"),
              {"detail": "The EC2 endpoint cannot be reached; check EC2_ENDPOINT_URL or your network, then retry.",
               "code": "endpoint_unreachable"}),
        504: ("The `aws` call did not finish within AWS_CLI_TIMEOUT_SECONDS; EC2 may still act on it.",
              ("aws_timeout",),
              {"detail": "The AWS call (stop_instance.sh) did not finish within 60 s; EC2 may still act on it. "
                         "Retry in a moment.", "code": "aws_timeout"}),
    }


def error_responses(*statuses: int) -> dict:
    """The OpenAPI responses of these error statuses: their meaning, their codes and an example body."""
    known = _error_statuses()
    responses = {}
    for status in statuses:
        meaning, codes, example = known[status]
        responses[status] = {
            "description": f"{meaning} Codes: {', '.join(f'`{code}`' for code in codes)}.",
            "content": {"application/json": {"schema": ERROR_SCHEMA, "example": example}},
        }
    return responses


def _json(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


def _documented_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for this path (its own entry first, else a template)."""
    paths = request.app.openapi()["paths"]
    path = request.url.path
    if path not in paths:
        path = next((t for t in paths if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", t), path)), path)
    return sorted(method.upper() for method in paths.get(path, {}))


JSON_BODY_ERRORS = ("model_attributes_type", "model_type", "dict_type")


def validation_body(errors: Sequence[Any], body: object, *, content_type: str | None = "application/json",
                    model: type[BaseModel] | None = None) -> dict:
    """The 422 body of a request that does not match the schema: `detail` is the first problem, where it is and
    what to do, in words (a JSON syntax error's line and column, the characters a pattern allows); unknown and
    missing fields are named all at once (an unknown one with the declared field it was likely meant to be,
    from `model`); a body sent without `Content-Type: application/json` says to send that header. `errors`
    lists every problem the same way."""
    listed: list[dict[str, Any]] = [
        {"loc": list(err.get("loc", ())), "msg": _problem(err, body, model), "type": err.get("type", "")}
        for err in errors]
    if not _is_json(content_type) and any(e["loc"] == ["body"] and e["type"] in JSON_BODY_ERRORS for e in listed):
        got = f"this request's is {content_type[:100]!r}" if content_type else "this request has none"
        message = f"send the body as JSON with the header Content-Type: application/json ({got})"
        return {"detail": f"Invalid request: {message}.", "code": "validation_error",
                "errors": [{"loc": ["header", "Content-Type"], "msg": message, "type": "content_type"}]}
    unknown = [_where(e["loc"], "") + _suggestion(e) for e in listed if e["type"] == "extra_forbidden"]
    missing = [_where(e["loc"], "") for e in listed if e["type"] == "missing" and len(e["loc"]) > 1]
    if unknown or missing:
        parts = ([f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"] if unknown else []) + \
                ([f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"] if missing else [])
        others = len(listed) - len(unknown) - len(missing)
        if others:
            parts.append(f"and {others} more problem{'s' if others > 1 else ''} (see errors)")
        return {"detail": f"Invalid request: {'; '.join(parts)}.", "code": "validation_error", "errors": listed}
    first: dict[str, Any] = listed[0] if listed else {"loc": [], "msg": "invalid request", "type": ""}
    where = _where(first["loc"], str(first["type"]))
    message = str(first["msg"]).rstrip(".")
    detail = f"Invalid request: {where}: {message}." if where else f"Invalid request: {message}."
    return {"detail": detail, "code": "validation_error", "errors": listed}


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _suggestion(listed: dict[str, Any]) -> str:
    """` (did you mean storage_gb?)`, from the problem's own words (see _problem)."""
    meant = re.search(r"did you mean (\S+)\?", str(listed["msg"]))
    return f" (did you mean {meant.group(1)}?)" if meant else ""


def _declared_fields(model: type[BaseModel] | None, path: Sequence[Any]) -> list[str]:
    """The field names declared where `path` (a loc without its last part) leads inside `model`."""
    for part in path:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        model = next((t for t in (annotation, *typing.get_args(annotation))
                      if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return list(model.model_fields) if model is not None else []


def _problem(err: Any, body: object, model: type[BaseModel] | None = None) -> str:
    kind, ctx, loc = err.get("type", ""), err.get("ctx") or {}, tuple(err.get("loc", ()))
    if kind == "json_invalid":
        return _json_syntax(str(ctx.get("error") or "not JSON"), loc[-1] if loc else None, body)
    if loc == ("body",) and kind == "missing":
        return "the JSON body is missing"
    if loc == ("body",) and kind in JSON_BODY_ERRORS:
        return "the body must be a JSON object"
    if kind == "extra_forbidden":
        fields = _declared_fields(model, loc[1:-1]) if loc[:1] == ("body",) else []
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.6) if loc else []
        return f"unknown field (did you mean {close[0]}?)" if close else "unknown field"
    if kind == "missing" and len(loc) > 1:
        return "required"
    if kind == "string_pattern_mismatch" and (hint := PATTERN_HINTS.get(str(ctx.get("pattern")))):
        return hint.explain(err.get("input"))
    return str(err.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _json_syntax(reason: str, position: object, body: object) -> str:
    """`Expecting ',' delimiter at line 2, column 9 (character 21)`, as Python's json module words it."""
    if not isinstance(position, int):
        return f"the body is not valid JSON: {reason}"
    if isinstance(body, str) and 0 <= position <= len(body):
        line = body.count("\n", 0, position) + 1
        column = position - body.rfind("\n", 0, position)
        return f"the body is not valid JSON: {reason} at line {line}, column {column} (character {position})"
    return f"the body is not valid JSON: {reason} at character {position}"


def _where(loc: list, kind: str) -> str:
    """The place of a problem in words: `name`, `tags key 'a$'`, `query tag`, `header Idempotency-Key`; nothing
    for the body as a whole (or its JSON syntax, whose message says where)."""
    parts, key = list(loc), None
    if parts[:1] == ["body"]:
        parts = parts[1:]
        if kind == "json_invalid":
            return ""
    if parts[-1:] == ["[key]"] and len(parts) >= 2:
        parts, key = parts[:-2], parts[-2]
    where = ""
    for part in parts:
        where += f"[{part}]" if isinstance(part, int) else f"{'.' if where else ''}{part}"
    if loc[:1] and loc[0] in ("query", "header", "path", "cookie"):
        where = where.replace(".", " ", 1)
    return where + (f" key {key!r}" if key is not None else "")


def _body_model(request: Request) -> type[BaseModel] | None:
    """The pydantic model of the matched route's JSON body, if it has one."""
    field = getattr(request.scope.get("route"), "body_field", None)
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def install_error_handlers(app: FastAPI) -> None:
    """Map every error, ours and the framework's, to the one envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status_code, exc.body(), exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json(422, validation_body(exc.errors(), exc.body, content_type=request.headers.get("content-type"),
                                          model=_body_model(request)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "body_too_large"}
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed."
        code = codes.get(exc.status_code, "http_error")
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's, e.g. not UTF-8
            detail, code = "The body cannot be read: send JSON in UTF-8 (Content-Type: application/json).", \
                "invalid_body"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such route. See /docs for the API."
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; RFC 9110 wants all of them.
            headers = {**(headers or {}), "Allow": ", ".join(_documented_methods(request))}
        return _json(exc.status_code, {"detail": detail, "code": code}, headers)

    async def _store(_: Request, exc: Exception) -> JSONResponse:
        reason = store_error_reason(exc)
        log.error("database error: %s", reason)
        return _json(503, {"detail": f"The database cannot be used right now ({reason}); nothing was "
                                     "changed in EC2 by this request. Retry shortly.", "code": "store_unavailable"},
                     {"Retry-After": "5"})

    for store_error in STORE_ERRORS:
        app.add_exception_handler(store_error, _store)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return _json(500, {"detail": "Internal error; see the server log.", "code": "internal_error"})
