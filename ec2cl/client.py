"""The REST API over httpx: every call, its errors mapped to the exit codes (errors.py), the retry-safe create."""

import ipaddress
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from ec2cl import __version__
from ec2cl.config import Profile, shown
from ec2cl.errors import REFUSED, UNREACHABLE, USAGE, CliError

# Connect and write quickly; a read answers from the record at once; a mutation's answer may wait on EC2 (the
# server's AWS_CLI_TIMEOUT_SECONDS is 60 s, and a launch runs three scripts).
TIMEOUT = httpx.Timeout(10.0, read=30.0)
MUTATION_TIMEOUT = httpx.Timeout(10.0, read=150.0)
CREATE_DEADLINE = 300.0  # a create's re-sends stop after this many seconds in all
# A create whose connection dropped is sent again with the same Idempotency-Key after these pauses (seconds):
# the server answers the first launch (Idempotent-Replayed) rather than launching a second box.
RESEND_DELAYS = (1.0, 2.0, 4.0, 8.0)
DEFAULT_MY_IP_URL = "https://checkip.amazonaws.com"
MY_IP_TIMEOUT = 3.0


def _unsendable() -> CliError:
    """A request httpx refuses to send (a header value it cannot carry): nothing of it is echoed (a token)."""
    return CliError("the request could not be sent as HTTP (is the token one line of printable ASCII?)", USAGE,
                    "bad_request")


def _refusal(response: httpx.Response) -> CliError:
    """The API's error envelope ({"detail", "code"}) as one line; a body that is not one (a proxy's page) by its
    HTTP status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return CliError(body["detail"], REFUSED, str(body.get("code") or f"http_{response.status_code}"))
    reason = response.reason_phrase or "error"
    return CliError(f"the API answered {response.status_code} {reason}", REFUSED, f"http_{response.status_code}")


class Api:
    """One profile's API: `Authorization: Bearer <token>` when it has a token."""

    def __init__(self, profile: Profile, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = shown(profile.url)  # for messages: no password in them
        headers = {"User-Agent": f"ec2cl/{__version__}"}
        if profile.token:
            headers["Authorization"] = f"Bearer {profile.token}"
        self.http = httpx.Client(base_url=profile.url, headers=headers, timeout=TIMEOUT, transport=transport,
                                 event_hooks={"response": [self._note_target]})
        self.sleep = sleep
        self.sandbox = False  # the server said it runs against the local EC2 sandbox (X-EC2-Target)

    def _note_target(self, response: httpx.Response) -> None:
        self.sandbox = self.sandbox or response.headers.get("X-EC2-Target") == "sandbox"

    def close(self) -> None:
        self.http.close()

    def unreachable(self, exc: Exception, extra: str = "") -> CliError:
        what = str(exc) or type(exc).__name__
        return CliError(f"cannot reach the API at {self.url} ({what}); is it running (make run)?{extra}",
                        UNREACHABLE, "unreachable")

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response, which is a success: a 4xx or 5xx raises its CliError (exit 1), a failed connection exit 3."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.LocalProtocolError:
            raise _unsendable() from None
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None
        if response.status_code >= 400:
            raise _refusal(response)
        return response

    def json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{self.url} answered {response.status_code} with no JSON: is it EC2 Creator Local's "
                           "API?", REFUSED, "bad_response") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.json(self.send("GET", path, params={k: v for k, v in params.items() if v is not None}))

    def post(self, path: str, body: Any = None) -> Any:
        return self.json(self.send("POST", path, json=body, timeout=MUTATION_TIMEOUT))

    def patch(self, path: str, body: Any) -> Any:
        return self.json(self.send("PATCH", path, json=body, timeout=MUTATION_TIMEOUT))

    def create(self, body: dict, on_resend: Callable[[str], None] = lambda note: None) -> tuple[dict, bool]:
        """POST /instances with one Idempotency-Key for this invocation. When the connection drops after the
        request may have left (a read error, a reset, a timeout, the server restarting), the same request goes
        again with the same key: the server answers with the instance the first one launched, never a second
        box. Returns the instance and whether it was such a replay."""
        key = f"ec2cl-{uuid.uuid4()}"
        started = time.monotonic()
        for attempt in range(len(RESEND_DELAYS) + 1):
            try:
                response = self.http.post("/instances", json=body, headers={"Idempotency-Key": key},
                                          timeout=MUTATION_TIMEOUT)
            except httpx.LocalProtocolError:
                raise _unsendable() from None
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == 0:  # nothing was sent: the API is not there
                    raise self.unreachable(exc) from None
                error: Exception = exc
            except httpx.TransportError as exc:
                error = exc
            else:
                if response.status_code == 409 and attempt and _refusal(response).code == "launch_in_progress":
                    error = RuntimeError("the first request is still launching")
                else:
                    if response.status_code >= 400:
                        raise _refusal(response)
                    return self.json(response), response.headers.get("Idempotent-Replayed") == "true"
            if attempt == len(RESEND_DELAYS) or time.monotonic() - started > CREATE_DEADLINE:
                raise self.unreachable(error, f" The create may have gone through: `ec2cl ls` shows it (its "
                                              f"Idempotency-Key was {key}).")
            delay = RESEND_DELAYS[attempt]
            on_resend(f"{str(error) or type(error).__name__}: sending the create again in {delay:g} s with the same "
                      f"Idempotency-Key (no second instance is launched)")
            self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def my_address(url: str) -> str | None:
    """This machine's public IPv4 as `url` (checkip.amazonaws.com's format: the address and a newline) says,
    within MY_IP_TIMEOUT seconds; None when it cannot be learnt."""
    try:
        response = httpx.get(url, timeout=MY_IP_TIMEOUT, follow_redirects=False,
                             headers={"User-Agent": f"ec2cl/{__version__}"})
        if response.status_code != 200:
            return None
        address = ipaddress.IPv4Address(response.text.strip())
    except (httpx.HTTPError, ValueError):
        return None
    return None if address.is_loopback or address.is_unspecified or address.is_multicast else str(address)
