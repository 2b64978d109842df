"""Webhook signing and delivery against a real local HTTP receiver."""

import base64
import secrets
import time

from standardwebhooks import Webhook

from tests.worker.receiver import WebhookReceiver
from worker.webhooks import RetryPolicy, WebhookSender, signed_request

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
FAST = RetryPolicy(attempts=3, first_delay=0.05, timeout=2.0)


def test_signed_request_verifies_with_the_reference_library():
    headers, body = signed_request(SECRET, "job.succeeded", {"id": "job_1", "status": "succeeded"})
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"] == {"id": "job_1", "status": "succeeded"}
    assert headers["webhook-id"].startswith("msg_")


def test_only_wanted_events_are_delivered_in_order_and_signed():
    attempts = []
    with WebhookReceiver(SECRET) as receiver:
        sender = WebhookSender(receiver.url, SECRET, ["job.running", "job.succeeded"], attempts.append, FAST)
        for event in ("job.running", "job.progress", "job.succeeded"):
            sender.send(event, {"id": "job_1"})
        sender.close(timeout=10)
    assert [p["type"] for _, p, _ in receiver.received] == ["job.running", "job.succeeded"]
    assert all(verified for _, _, verified in receiver.received)
    assert [(a["event"], a["attempt"], a["ok"], a["status_code"]) for a in attempts] == [
        ("job.running", 1, True, 200), ("job.succeeded", 1, True, 200)]


def test_failed_deliveries_are_retried_with_the_same_id():
    attempts = []
    with WebhookReceiver(SECRET, statuses=[500, 503]) as receiver:
        sender = WebhookSender(receiver.url, SECRET, None, attempts.append, FAST)
        sender.send("job.failed", {"id": "job_1"})
        sender.close(timeout=10)
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    assert len({h["webhook-id"] for h, _, _ in receiver.received}) == 1


def test_a_dead_receiver_costs_bounded_attempts():
    attempts = []
    sender = WebhookSender("http://127.0.0.1:9/unreachable", SECRET, None, attempts.append, FAST)
    sender.send("job.succeeded", {"id": "job_1"})
    sender.close(timeout=10)
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert not any(a["ok"] for a in attempts) and all("error" in a for a in attempts)


def test_a_slow_receiver_never_blocks_the_sender_and_delivery_goes_on_after_close():
    attempts = []
    with WebhookReceiver(SECRET, delay=1.0) as receiver:
        sender = WebhookSender(receiver.url, SECRET, ["job.progress", "job.succeeded"], attempts.append, FAST)
        started = time.monotonic()
        for step in range(50):
            sender.send("job.progress", {"step": step})
        sender.send("job.succeeded", {"id": "job_1"})
        assert time.monotonic() - started < 0.5
        assert sender.close(timeout=0.2) is False
        assert time.monotonic() - started < 1.0
        deadline = time.monotonic() + 10
        while not any(a["event"] == "job.succeeded" for a in attempts) and time.monotonic() < deadline:
            time.sleep(0.05)
    types = [payload["type"] for _, payload, _ in receiver.received]
    # Waiting progress messages coalesce into the newest one; the final message arrives.
    assert types[-1] == "job.succeeded" and types.count("job.progress") <= 2
    assert all(verified for _, _, verified in receiver.received)
