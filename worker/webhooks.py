"""Job webhooks: Standard Webhooks signing and bounded, non-blocking delivery.

A job may carry `webhook_url`, `webhook_events` (which of `app.schemas.WEBHOOK_EVENTS`
to send, e.g. `job.succeeded`; None means the terminal ones) and a per-job
`webhook_secret` (`whsec_<base64>`). Each message is POSTed as
`{"type": "job.succeeded", "timestamp": ..., "data": {...}}` with the
`webhook-id`, `webhook-timestamp` and `webhook-signature` (v1, HMAC-SHA256) headers;
receivers verify it with any Standard Webhooks library. Deliveries run on a
background thread with a per-request timeout and bounded exponential backoff, so a
slow or dead receiver never slows the job; every attempt is reported to a callback
(the worker records it as a job event). Deliveries still retrying when a job ends go
on in the background while the worker runs its next job.
"""

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from app.schemas import DEFAULT_WEBHOOK_EVENTS

log = logging.getLogger(__name__)



PROGRESS = "job.progress"


def wanted_events(events: list[str] | None) -> frozenset[str]:
    """The job events a webhook asked for; None or empty means the terminal ones."""
    return frozenset(events or DEFAULT_WEBHOOK_EVENTS)


def signed_request(secret: str, event: str, data: dict[str, Any],
                   msg_id: str | None = None, now: datetime | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and body of one webhook message of type `event`, signed with `secret`.

    Raises standardwebhooks' errors for an empty or malformed secret.
    """
    now = now or datetime.now(UTC)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    body = json.dumps({"type": event, "timestamp": now.isoformat(), "data": data},
                      separators=(",", ":"), default=str)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }
    return headers, body.encode()


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries per message, waiting `first_delay` · 2^k between them."""

    attempts: int = 5
    first_delay: float = 1.0
    timeout: float = 5.0


@dataclass
class _Message:
    event: str
    data: dict[str, Any]
    msg_id: str


class WebhookSender:
    """Delivers one job's webhook messages in order on a background thread.

    `record(attempt_info)` is called after every attempt with
    `{event, webhook_id, attempt, ok, status_code | error}`. A newer `job.progress`
    message replaces one still waiting, so a slow receiver cannot build a backlog.
    """

    def __init__(self, url: str, secret: str, events: list[str] | None,
                 record: Callable[[dict[str, Any]], None], policy: RetryPolicy = RetryPolicy()) -> None:
        self._url = url
        self._secret = secret
        self._wanted = wanted_events(events)
        self._record = record
        self._policy = policy
        self._pending: deque[_Message] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def send(self, event: str, data: dict[str, Any]) -> None:
        """Queue a message of type `event` if the webhook asked for it; never blocks."""
        if event not in self._wanted:
            return
        with self._cond:
            if event == PROGRESS:
                self._pending = deque(m for m in self._pending if m.event != PROGRESS)
            self._pending.append(_Message(event, data, f"msg_{uuid.uuid4().hex}"))
            self._cond.notify()

    def close(self, timeout: float) -> bool:
        """Stop taking messages; wait up to `timeout` s for the queued ones to be delivered.

        Returns True if all were. Otherwise the delivery thread goes on in the background
        (the worker process outlives the job) and ends when its queue is empty.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify()
            while (self._pending or self._busy) and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return not (self._pending or self._busy)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                message = self._pending.popleft()
                self._busy = True
            try:
                self._deliver(message)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, message: _Message) -> None:
        with httpx.Client(timeout=self._policy.timeout, follow_redirects=False) as client:
            for attempt in range(1, self._policy.attempts + 1):
                outcome = self._attempt(client, message)
                self._safe_record({"event": message.event, "webhook_id": message.msg_id,
                                   "attempt": attempt, **outcome})
                if outcome["ok"] or attempt == self._policy.attempts:
                    return
                time.sleep(self._policy.first_delay * 2 ** (attempt - 1))

    def _attempt(self, client: httpx.Client, message: _Message) -> dict[str, Any]:
        # Re-signed per attempt: the timestamp must be fresh, the id stays the same.
        headers, body = signed_request(self._secret, message.event, message.data, message.msg_id)
        try:
            response = client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": response.is_success, "status_code": response.status_code}

    def _safe_record(self, info: dict[str, Any]) -> None:
        # Recording is best effort: a database hiccup must not kill the delivery thread.
        try:
            self._record(info)
        except Exception:
            log.exception("could not record webhook attempt %s", info)
