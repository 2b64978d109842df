"""A real local HTTP webhook receiver that verifies Standard Webhooks signatures."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from standardwebhooks import Webhook, WebhookVerificationError


class WebhookReceiver:
    """Answers each POST with the next status in `statuses` (then 200) after `delay` s.

    `received` holds `(headers, payload, verified)` for every request; with no
    `secret` (not known yet) `verified` is None and `verify_all(secret)` checks later.
    """

    def __init__(self, secret: str | None = None, statuses: list[int] | None = None,
                 delay: float = 0.0) -> None:
        self.received: list[tuple[dict[str, str], dict, bool | None]] = []
        self.bodies: list[bytes] = []
        self._statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = dict(self.headers.items())
                verified = None if secret is None else _verifies(secret, body, headers)
                receiver.bodies.append(body)
                receiver.received.append((headers, json.loads(body), verified))
                time.sleep(delay)
                self.send_response(receiver._statuses.pop(0) if receiver._statuses else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def verify_all(self, secret: str) -> bool:
        """True if every request so far carries a valid signature for `secret`."""
        return all(_verifies(secret, body, headers)
                   for body, (headers, _, _) in zip(self.bodies, self.received, strict=True))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
        return True
    except WebhookVerificationError:
        return False
