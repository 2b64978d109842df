"""Issue 14: webhooks never reach loopback, private or link-local addresses unless allowed,
checked at submit and on the resolved address at delivery, never carry URL credentials,
and record failures without low-level error text."""

import socket

import pytest
from fastapi.testclient import TestClient

from app.core.jobs import webhook_guard
from app.main import create_app
from tests.support.http import transfer_spec
from tests.support.receiver import WebhookReceiver
from tests.worker.test_webhooks import FAST, SECRET, _attempts, _drain, _enqueue, _webhook_job

STRICT = FAST.__class__(attempts=1, first_delay=0.05, timeout=2.0, allow_private=False)
REFUSED_URLS = ["http://127.0.0.1/hook", "http://169.254.169.254/latest/meta-data", "http://10.0.0.5/",
                "http://192.168.1.1/", "http://0.0.0.0:8000/", "http://2130706433/", "http://0x7f.1/",
                "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://224.0.0.1/", "http://localhost:8000/",
                "http://100.64.0.1/"]


@pytest.fixture
def sessions(settings):
    from worker.context import worker_context

    return worker_context(settings).sessions


@pytest.fixture
def strict_api(settings):
    with TestClient(create_app(settings.model_copy(update={"webhook_allow_private": False}))) as client:
        yield client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_internal_destinations_and_credentials_are_refused_at_submit(strict_api, api, tenant):
    spec = transfer_spec(api, tenant)
    for url in REFUSED_URLS:
        response = strict_api.post("/v1/jobs", json={"spec": spec, "webhook": {"url": url}}, headers=tenant.headers)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["code"] == "webhook_url_not_allowed"
        assert response.json()["errors"][0]["field"] == "body.webhook.url"
    for client in (strict_api, api):  # credentials are refused even where private hosts are allowed
        response = client.post("/v1/jobs", json={"spec": spec, "webhook": {"url": "https://u:p@example.com/h"}},
                               headers=tenant.headers)
        assert response.status_code == 422 and "credentials" in response.json()["detail"]
    public = strict_api.post("/v1/jobs", json={"spec": spec, "webhook": {"url": "https://hooks.example.com/x"}},
                             headers=tenant.headers)
    assert public.status_code == 202, public.text


def _resolve_to(monkeypatch, mapping: dict[str, str]) -> None:
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host in mapping:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (mapping[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(webhook_guard.socket, "getaddrinfo", fake)


def test_delivery_checks_the_resolved_address(settings, tenant_id, sessions, monkeypatch):
    """A name that resolves to a private address at delivery (DNS rebinding) is not contacted."""
    with WebhookReceiver(SECRET) as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        _resolve_to(monkeypatch, {"rebound.example.com": "127.0.0.1"})
        for url in (receiver.url, f"http://rebound.example.com:{port}/hook"):
            job_id = _webhook_job(settings, tenant_id, url)
            _enqueue(sessions, job_id, "job.succeeded")
            _drain(sessions, STRICT)
            assert _attempts(sessions, job_id)[0]["error"] == "destination_not_allowed", url
        assert receiver.received == []


def test_delivery_connects_to_the_address_it_checked(settings, tenant_id, sessions, monkeypatch):
    """The request goes to the resolved address (no second lookup), with the original Host."""
    with WebhookReceiver(SECRET) as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        _resolve_to(monkeypatch, {"hooks.trajx.test": "127.0.0.1"})  # .test never resolves for real
        job_id = _webhook_job(settings, tenant_id, f"http://hooks.trajx.test:{port}/hook")
        _enqueue(sessions, job_id, "job.succeeded")
        _drain(sessions, FAST)
        assert _attempts(sessions, job_id)[0]["ok"] is True
        [(headers, _, verified)] = receiver.received
        assert headers["Host"] == f"hooks.trajx.test:{port}" and verified


def test_url_credentials_are_never_sent(settings, tenant_id, sessions):
    with WebhookReceiver(SECRET) as receiver:
        job_id = _webhook_job(settings, tenant_id, receiver.url.replace("http://", "http://user:secret@"))
        _enqueue(sessions, job_id, "job.succeeded")
        _drain(sessions, FAST)
        [(headers, _, _)] = receiver.received
        assert "Authorization" not in headers and "authorization" not in {k.lower() for k in headers}


def test_failures_are_recorded_without_low_level_text(settings, tenant_id, sessions):
    job_id = _webhook_job(settings, tenant_id, "http://127.0.0.1:9/closed-port")
    _enqueue(sessions, job_id, "job.succeeded")
    _drain(sessions, FAST)
    assert {a["error"] for a in _attempts(sessions, job_id)} == {"delivery_failed"}
