"""Job webhooks: Standard Webhooks signing and delivery of the outbox (`app.core.jobs.outbox`).

Each message is POSTed as `{"type": "job.succeeded", "timestamp": ..., "data": {...}}`
with the `webhook-id` (stable across retries), `webhook-timestamp` and
`webhook-signature` (v1, HMAC-SHA256, the job's `webhook_secret`) headers; receivers
verify it with any Standard Webhooks library. `deliver_due` makes one attempt at every
message that is due, in order per job; a failed one is retried later with exponential
backoff, until `RetryPolicy.attempts`. Every attempt is recorded as a `webhook` job
event. A `Deliverer` thread runs it in every worker, the embedded worker and the
recovery loop; an attempt is leased in the database, so they can run side by side.
"""

import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker
from standardwebhooks import Webhook

from app.core.jobs.claim import add_event
from app.core.jobs.webhook_guard import DestinationRefused, PinnedTransport
from app.core.persistence.models import Job, WebhookDelivery, utcnow
from app.core.persistence.outage import is_unavailable
from app.core.settings import Settings
from worker.context import worker_context

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
ERROR_BACKOFF_SECONDS = 5.0


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
    # TRAJX_WEBHOOK_ALLOW_PRIVATE: may messages go to loopback/private/link-local addresses?
    allow_private: bool = False

    @property
    def lease(self) -> timedelta:
        # Long enough for one attempt: a deliverer that dies mid-attempt frees its message after it.
        return timedelta(seconds=self.timeout + 30)


def deliver_due(sessions: sessionmaker[Session], policy: RetryPolicy = RetryPolicy(), limit: int = 50) -> int:
    """One attempt at each message due now whose earlier messages (same job) are done.

    Returns how many attempts were made.
    """
    earlier = aliased(WebhookDelivery)
    with sessions() as session:
        due = session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.next_attempt_at <= utcnow(),
                   ~exists().where(earlier.job_id == WebhookDelivery.job_id, earlier.id < WebhookDelivery.id))
            .order_by(WebhookDelivery.id).limit(limit)
        ).all()
        session.rollback()
    attempted = 0
    transport = PinnedTransport(policy.allow_private)
    with httpx.Client(timeout=policy.timeout, follow_redirects=False, transport=transport) as client:
        for delivery_id in due:
            attempted += _attempt(sessions, client, policy, delivery_id)
    return attempted


def _attempt(sessions: sessionmaker[Session], client: httpx.Client, policy: RetryPolicy, delivery_id: int) -> bool:
    """Lease the message, POST it, record the outcome; False if another deliverer has it."""
    with sessions() as session:
        now = utcnow()
        leased = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.next_attempt_at <= now)
            .values(next_attempt_at=now + policy.lease)
        ).rowcount == 1
        session.commit()
        if not leased:
            return False
        delivery = session.get(WebhookDelivery, delivery_id)
        job = session.get(Job, delivery.job_id)
        job_id, url, secret = job.id, job.webhook_url, job.webhook_secret
        event, data, msg_id, attempt = delivery.event, delivery.data, delivery.message_id, delivery.attempts + 1
        session.rollback()
    outcome = _post(client, url, secret, event, data, msg_id)
    done = outcome["ok"] or attempt >= policy.attempts
    retry_at = utcnow() + timedelta(seconds=policy.first_delay * 2 ** (attempt - 1))
    with sessions() as session:
        # A finished message leaves the outbox; the job's `webhook` events keep its history.
        row = WebhookDelivery.id == delivery_id
        session.execute(delete(WebhookDelivery).where(row) if done else
                        update(WebhookDelivery).where(row).values(attempts=attempt, next_attempt_at=retry_at))
        add_event(session, job_id, "webhook", {"event": event, "webhook_id": msg_id, "attempt": attempt, **outcome})
        session.commit()
    return True


def _post(client: httpx.Client, url: str, secret: str, event: str, data: dict[str, Any],
          msg_id: str) -> dict[str, Any]:
    # Signed per attempt: the timestamp must be fresh, the id stays the same.
    headers, body = signed_request(secret, event, data, msg_id)
    try:
        # Credentials in a URL (stored before they were refused) would go out as Basic auth.
        response = client.post(httpx.URL(url).copy_with(username=None, password=None), content=body,
                               headers=headers)
    except DestinationRefused:
        return {"ok": False, "error": "destination_not_allowed"}
    except httpx.HTTPError:
        # No low-level text: "connection refused" vs "timed out" would make webhooks a port scanner.
        return {"ok": False, "error": "delivery_failed"}
    return {"ok": response.is_success, "status_code": response.status_code}


class Deliverer:
    """Runs `deliver_due` on a daemon thread: at once after `wake()`, else every `poll_seconds`.

    Messages it has not delivered when the process ends stay in the outbox for the next one.
    """

    def __init__(self, sessions: sessionmaker[Session], policy: RetryPolicy = RetryPolicy(),
                 poll_seconds: float = POLL_SECONDS) -> None:
        self._sessions = sessions
        self._policy = policy
        self._poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        outage = False
        while not self._stop.is_set():
            try:
                attempted = deliver_due(self._sessions, self._policy)
            except Exception as exc:
                # The database may be restarting: the messages wait in it. An outage is one
                # line when it starts and one when it ends, not a traceback every few seconds.
                if not is_unavailable(exc):
                    log.exception("webhook delivery failed; retrying in %g s", ERROR_BACKOFF_SECONDS)
                elif not outage:
                    log.warning("webhook delivery paused: the database is unavailable (%s); retrying every %g s",
                                type(exc).__name__, ERROR_BACKOFF_SECONDS)
                outage = outage or is_unavailable(exc)
                self._stop.wait(ERROR_BACKOFF_SECONDS)
                continue
            if outage:
                log.info("webhook delivery resumed: the database answers again")
                outage = False
            if not attempted:
                self._wake.wait(self._poll_seconds)
                self._wake.clear()


_deliverers: dict[tuple[int, str], Deliverer] = {}
_deliverers_lock = threading.Lock()


def deliverer(settings: Settings) -> Deliverer:
    """This process's deliverer for `settings.database_url`, started on first use (a forked
    child starts its own)."""
    with _deliverers_lock:
        key = (os.getpid(), settings.database_url)
        if key not in _deliverers:
            _deliverers[key] = Deliverer(worker_context(settings).sessions,
                                         RetryPolicy(allow_private=settings.webhook_allow_private))
        return _deliverers[key]
