"""Access control: bearer token, refusal to serve a non-loopback address without one, body limit."""

import ipaddress
import json
import re

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings, uvicorn_option

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
# Headers a reverse proxy adds: a proxy in front means the network can reach us, which needs a token.
PROXY_HEADERS = {"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
UNPROTECTED_BIND_MESSAGE = ("refusing to serve on {host} without API_TOKEN (or API_TOKENS_FILE): anyone who can "
                            "reach it could launch and terminate machines on your AWS account. Set one (e.g. export "
                            "API_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), or a token "
                            "per person with scripts/add_user.sh and API_TOKENS_FILE) or bind to 127.0.0.1.")


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_HOST = re.compile(r"\[(?P<v6>[0-9a-f:.]+)\](?::\d{1,5})?|(?P<name>[a-z0-9.-]+)(?::\d{1,5})?")


def host_name(host_header: str) -> str:
    """The name or address of a Host header value, without its port ('[::1]:8000' -> '::1'); '' when
    the value is not a well-formed host[:port]."""
    match = _HOST.fullmatch(host_header.strip().lower())
    if match is None:
        return ""
    return match.group("v6") or match.group("name")


def tokenless_refusal(scope: Scope) -> tuple[str, str] | None:
    """Without API_TOKEN only this machine's own clients are served. A browser is one of them, and
    any page it shows could send requests here: refuse what a browser would send on another
    site's behalf (a foreign Host: DNS rebinding; a cross-site Origin or Sec-Fetch-Site on a
    state-changing request), and anything that came through a proxy. Returns (code, reason)."""
    headers: dict[str, str] = {}
    for key, value in scope.get("headers") or []:
        headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    host = headers.get("host")
    if host is not None and not is_loopback(host_name(host)):
        return ("host_not_allowed", f"Host {host!r} is not this machine's loopback name or address; without "
                "API_TOKEN the server only answers requests addressed to 127.0.0.1, ::1 or localhost "
                "(a foreign Host is what a DNS-rebinding web page sends).")
    proxied = sorted(PROXY_HEADERS & headers.keys())
    if proxied:
        return ("proxied_request", f"The request came through a proxy ({', '.join(proxied)}): the network can "
                "reach this server, so it needs API_TOKEN. Set one, or connect to 127.0.0.1 directly.")
    if scope.get("method", "GET").upper() in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site", "").lower()
    origin = headers.get("origin")
    own_origin = f"{scope.get('scheme', 'http')}://{host}".lower() if host else None
    if site == "cross-site" or (origin is not None and origin.lower() != own_origin):
        return ("cross_site_request", f"A web page on {origin or 'another site'} asked to change something; "
                "without API_TOKEN only pages of this server (Swagger UI at /docs), curl and scripts may. Set "
                "API_TOKEN to call the API from another origin.")
    return None


def requested_bind_host(argv: list[str] | None = None) -> str:
    """The --host given to uvicorn on the command line (or UVICORN_HOST); uvicorn's default otherwise."""
    return uvicorn_option("host", "127.0.0.1", argv)


def check_bind(settings: Settings, argv: list[str] | None = None) -> None:
    host = requested_bind_host(argv)
    if not settings.auth_configured and not is_loopback(host):
        raise SystemExit("ec2-creator-local: " + UNPROTECTED_BIND_MESSAGE.format(host=host))


class GuardMiddleware:
    """Pure ASGI: 413 for bodies over MAX_BODY_BYTES; without a token (API_TOKEN or API_TOKENS_FILE), 403
    for a request that reached a non-loopback address of this host (whatever started the server) or that
    a browser sent on another site's behalf (see tokenless_refusal)."""

    def __init__(self, app: ASGIApp, settings_getter) -> None:
        self.app = app
        self.settings_getter = settings_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: Settings = self.settings_getter()
        server = scope.get("server")
        if not settings.auth_configured:
            if server and server[0] and not is_loopback(str(server[0])):
                await _reject(send, 403, "forbidden", "This server has no API_TOKEN and only serves loopback "
                                                      "clients.")
                return
            refusal = tokenless_refusal(scope)
            if refusal is not None:
                await _reject(send, 403, *refusal)
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
