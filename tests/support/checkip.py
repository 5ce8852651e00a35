"""A stand-in for https://checkip.amazonaws.com (MY_IP_URL) on 127.0.0.1: its answer is an address and a newline."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CheckIp:
    """checkip.amazonaws.com's answer (an address and a newline), from 127.0.0.1; `status`/`delay` to misbehave."""

    def __init__(self) -> None:
        self.answer, self.status, self.delay, self.hits = "203.0.113.7\n", 200, 0.0, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.hits += 1
                time.sleep(outer.delay)
                body = outer.answer.encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
