"""Who may reach port 22: `ssh_from` resolved to a CIDR, and this host's public IPv4 (`my_ip`).

`my_ip` is read from MY_IP_URL (default https://checkip.amazonaws.com, which answers the caller's
address as AWS sees it), in a thread (never blocking the event loop), with a timeout, cached briefly.
Without MY_IP_URL, in the sandbox it is the address the request came from.
"""

import asyncio
import ipaddress
import time
import urllib.error
import urllib.request

from app.core.errors import Unavailable, UpstreamError

CHECKIP_URL = "https://checkip.amazonaws.com"
FETCH_TIMEOUT_SECONDS = 5.0
CACHE_SECONDS = 60.0
MAX_ANSWER = 256


def public_ipv4(text: str) -> str | None:
    """The IPv4 address an answer names (checkip's is the address and a newline), else None."""
    try:
        address = ipaddress.IPv4Address(text.strip())
    except ValueError:
        return None
    return str(address)


class MyIp:
    """This host's public IPv4 as AWS sees it: one fetch per CACHE_SECONDS, shared by concurrent askers."""

    def __init__(self, url: str | None, sandbox: bool, timeout: float = FETCH_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.sandbox = sandbox
        self.timeout = timeout
        self._cached: tuple[float, str] | None = None
        self._lock = asyncio.Lock()

    async def get(self, client_ip: str | None = None) -> str:
        if self.url is None and self.sandbox:
            # The sandbox has no internet: its "public" address is where the request came from.
            if client_ip and public_ipv4(client_ip):
                return client_ip
            raise Unavailable("ssh_from my_ip: the request's address is not an IPv4 address and MY_IP_URL is not "
                              "set; send ssh_from as a CIDR, or set MY_IP_URL.", code="my_ip_unavailable")
        async with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            address = await asyncio.to_thread(self._fetch, self.url or CHECKIP_URL)
            self._cached = (time.monotonic(), address)
            return address

    def _fetch(self, url: str) -> str:
        setting = "MY_IP_URL" if self.url else f"MY_IP_URL (default {CHECKIP_URL})"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as answer:  # noqa: S310 - http(s) only (Settings)
                text = answer.read(MAX_ANSWER).decode("ascii", "replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UpstreamError(f"ssh_from my_ip: {setting} did not answer ({reason}); send ssh_from as a CIDR "
                                "(e.g. 203.0.113.7/32), or fix MY_IP_URL.", code="my_ip_unavailable") from None
        address = public_ipv4(text)
        if address is None:
            raise UpstreamError(f"ssh_from my_ip: {setting} did not answer an IPv4 address; send ssh_from as a "
                                "CIDR, or fix MY_IP_URL.", code="my_ip_unavailable")
        return address


def admits(cidr: str | None, address: str) -> bool:
    """Whether a rule (a CIDR; "none" or None admit nobody) lets `address` in."""
    if not cidr or cidr == "none":
        return False
    try:
        return ipaddress.IPv4Address(address) in ipaddress.IPv4Network(cidr, strict=False)
    except ValueError:
        return False
