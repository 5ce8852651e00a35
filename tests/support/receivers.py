"""Real receivers for the notification tests: an SMTP server (aiosmtpd) and an HTTP server that takes
Apprise's `json://` posts, both on 127.0.0.1. Each can be stopped and started again on the same port
(a channel that is down, then back)."""

import json
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from tests.support.processes import free_port


class MailServer:
    """aiosmtpd on 127.0.0.1:port; `messages` holds every mail it accepted, parsed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        with self._lock:
            self.messages.append(message_from_bytes(envelope.original_content or envelope.content,  # type: ignore[arg-type]
                                                    policy=policy.default))
        return "250 Message accepted for delivery"

    def start(self) -> "MailServer":
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def subjects(self) -> list[str]:
        with self._lock:
            return [str(m["Subject"]) for m in self.messages]

    def settings(self, to: str = "dev@example.com") -> dict[str, str]:
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port), "SMTP_STARTTLS": "false",
                "SMTP_FROM": "ec2cl@example.com", "NOTIFY_EMAIL_TO": to}


class WebhookReceiver:
    """An HTTP server that records every JSON body posted to it (Apprise's json:// sends title and message)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.posts: list[dict] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "WebhookReceiver":
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                posts.append({"path": self.path, "headers": dict(self.headers), **json.loads(body or b"{}")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def titles(self) -> list[str]:
        return [p.get("title", "") for p in self.posts]


def wait_for(count_of, expected: int, timeout: float = 30.0) -> None:
    """Wait until count_of() reaches `expected`."""
    deadline = time.monotonic() + timeout
    while count_of() < expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {count_of()} of {expected} arrived within {timeout}s")
        time.sleep(0.1)
