"""Access control: bearer token, refusal to serve a non-loopback address without one, body limit."""

import ipaddress
import json
import os
import sys

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
NO_TOKEN_MESSAGE = ("refusing to serve on {host} without API_TOKEN: anyone who can reach it could launch and "
                    "terminate machines on your AWS account. Set one (e.g. export API_TOKEN=$(python3 -c "
                    "'import secrets; print(secrets.token_urlsafe(32))')) or bind to 127.0.0.1.")


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def requested_bind_host(argv: list[str] | None = None) -> str:
    """The --host given to uvicorn on the command line (or UVICORN_HOST); uvicorn's default otherwise."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--host" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--host="):
            return arg.split("=", 1)[1]
    return os.environ.get("UVICORN_HOST", "127.0.0.1")


def check_bind(settings: Settings, argv: list[str] | None = None) -> None:
    host = requested_bind_host(argv)
    if settings.api_token is None and not is_loopback(host):
        raise SystemExit("ec2-creator-local: " + NO_TOKEN_MESSAGE.format(host=host))


class GuardMiddleware:
    """Pure ASGI: 413 for bodies over MAX_BODY_BYTES; 403 for a request that reached a
    non-loopback address of this host while no API_TOKEN is set (whatever started the server)."""

    def __init__(self, app: ASGIApp, settings_getter) -> None:
        self.app = app
        self.settings_getter = settings_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: Settings = self.settings_getter()
        server = scope.get("server")
        if settings.api_token is None and server and server[0] and not is_loopback(str(server[0])):
            await _reject(send, 403, "forbidden", "This server has no API_TOKEN and only serves loopback clients.")
            return
        limit = settings.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _reject(send, 413, "body_too_large", f"Request body larger than {limit} bytes.")
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await _reject(send, 413, "body_too_large", f"Request body larger than {limit} bytes.")


class _TooLarge(StarletteHTTPException):
    """Raised while a chunked body is read: FastAPI renders it through the one error envelope."""

    def __init__(self) -> None:
        super().__init__(413, "Request body too large.")


async def _reject(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"detail": detail, "code": code}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
