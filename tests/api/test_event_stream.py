"""`GET /v1/jobs/{id}/events` as server-sent events, against a real uvicorn server.

The worker is played by writes to the database from the test (events, then the
final status with its event in one commit, as `worker/runner.py` does).
"""

import threading
import time

import httpx
import pytest
from httpx_sse import EventSource
from sqlalchemy import update

from app.api import event_stream
from app.core.persistence.models import Job, JobEvent, utcnow
from tests.conftest import make_tenant
from tests.support.http import transfer_spec
from tests.support.live_server import serve
from trajx.client import Client

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def job_id(api, tenant, dispatcher) -> str:
    response = api.post("/v1/jobs", json={"spec": transfer_spec(api, tenant)}, headers=tenant.headers)
    assert response.status_code == 202, response.text
    assert dispatcher.dispatched == [response.json()["id"]]
    return response.json()["id"]


def add_events(session_factory, job_id: str, *types: str, finish: str | None = None) -> None:
    with session_factory() as session:
        session.add_all(JobEvent(job_id=job_id, type=t, data={"n": i}, created_at=utcnow()) for i, t in enumerate(types))
        if finish:
            session.execute(update(Job).where(Job.id == job_id).values(status=finish, finished_at=utcnow()))
            session.add(JobEvent(job_id=job_id, type=finish, data={}, created_at=utcnow()))
        session.commit()


def mark_running(session_factory, job_id: str) -> None:
    """A worker has claimed the job (no worker runs in these tests)."""
    with session_factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running", attempts=1))
        session.commit()


def read_stream(base_url: str, job_id: str, headers: dict[str, str], timeout: float = 20) -> tuple[httpx.Response, list]:
    with httpx.stream("GET", f"{base_url}/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        messages = [m for m in EventSource(response).iter_sse() if m.data]  # job events, no keep-alives
    return response, messages


def test_finished_job_streams_its_events_then_ends_and_resumes_after_last_event_id(
        api_app, tenant, job_id, session_factory):
    add_events(session_factory, job_id, "claimed", "started", "progress", finish="succeeded")
    with serve(api_app) as base_url:
        response, messages = read_stream(base_url, job_id, {**tenant.headers, **SSE})
        assert response.headers["content-type"].startswith("text/event-stream")
        assert [m.event for m in messages] == ["created", "claimed", "started", "progress", "succeeded"]
        ids = [int(m.id) for m in messages]
        assert ids == sorted(ids)
        _, resumed = read_stream(base_url, job_id, {**tenant.headers, **SSE, "Last-Event-ID": str(ids[2])})
        assert [int(m.id) for m in resumed] == ids[3:]
        # The same resource without the Accept header is still a page (polling keeps working).
        page = httpx.get(f"{base_url}/v1/jobs/{job_id}/events", headers=tenant.headers).json()
        assert [e["id"] for e in page["data"]] == ids


def test_running_job_events_arrive_live_and_the_stream_ends_with_the_job(
        api_app, tenant, job_id, session_factory, monkeypatch):
    monkeypatch.setattr(event_stream, "HEARTBEAT_SECONDS", 0.2)
    mark_running(session_factory, job_id)
    received: list[tuple[float, str]] = []
    raw_lines: list[str] = []

    def worker():
        time.sleep(1.0)
        add_events(session_factory, job_id, "progress")
        time.sleep(1.0)
        add_events(session_factory, job_id, "progress", finish="succeeded")

    with serve(api_app) as base_url, httpx.stream(
            "GET", f"{base_url}/v1/jobs/{job_id}/events", headers={**tenant.headers, **SSE}, timeout=20) as response:
        threading.Thread(target=worker, daemon=True).start()
        started = time.monotonic()
        for line in response.iter_lines():
            raw_lines.append(line)
            if line.startswith("event: "):
                received.append((time.monotonic() - started, line.removeprefix("event: ")))
    assert [event for _, event in received] == ["created", "progress", "progress", "succeeded"]
    # The first progress event came while the job was still running, not in one batch at the end.
    assert received[1][0] < received[-1][0] - 0.5
    assert ": keep-alive" in raw_lines


def test_another_tenants_job_is_404_and_no_key_is_401(api_app, tenant, job_id, session_factory):
    other = make_tenant(session_factory)
    with serve(api_app) as base_url:
        response, _ = read_stream(base_url, job_id, {**other.headers, **SSE})
        assert response.status_code == 404 and response.json()["code"] == "job_not_found"
        anonymous, _ = read_stream(base_url, job_id, SSE)
        assert anonymous.status_code == 401


def test_client_follow_events_yields_each_event_once_until_the_job_ends(api_app, tenant, job_id, session_factory):
    add_events(session_factory, job_id, "claimed")
    with serve(api_app) as base_url, Client(base_url, tenant.key) as client:
        threading.Timer(0.8, add_events, (session_factory, job_id, "progress"), {"finish": "failed"}).start()
        followed = [e.type for e in client.follow_events(job_id)]
    assert followed == ["created", "claimed", "progress", "failed"]


@pytest.mark.parametrize(("header", "expected"), [
    ("text/event-stream", True), ("application/json, text/event-stream;q=0.9", True),
    ("application/json", False), (None, False), ("text/event-streams", False)])
def test_accept_header_negotiation(header, expected):
    assert event_stream.wants_event_stream(header) is expected


@pytest.mark.parametrize(("value", "expected"), [("12", 12), (" 7 ", 7), ("-1", None), ("x", None), ("", None),
                                                 ("9" * 40, None), (None, None)])
def test_last_event_id_parsing(value, expected):
    assert event_stream.parse_last_event_id(value) == expected


def test_a_tenant_beyond_its_open_streams_gets_429_and_the_client_polls_instead(
        api_app, tenant, job_id, session_factory, monkeypatch):
    monkeypatch.setattr(event_stream, "MAX_STREAMS_PER_TENANT", 1)
    mark_running(session_factory, job_id)
    url_headers = {**tenant.headers, **SSE}
    with serve(api_app) as base_url:
        url = f"{base_url}/v1/jobs/{job_id}/events"
        with httpx.stream("GET", url, headers=url_headers, timeout=20) as first:
            lines = first.iter_lines()  # kept: a dropped iterator would close the stream
            assert next(lines) == "retry: 2000"  # the stream is open: its slot is held
            refused = httpx.get(url, headers=url_headers)
            assert refused.status_code == 429 and refused.json()["code"] == "too_many_streams"
            assert refused.headers["retry-after"] == "5"
            with Client(base_url, tenant.key) as client:
                threading.Timer(0.5, add_events, (session_factory, job_id, "progress"), {"finish": "succeeded"}).start()
                assert [e.type for e in client.follow_events(job_id)] == ["created", "progress", "succeeded"]
        # The closed stream gave its slot back.
        deadline = time.monotonic() + 5
        while (again := read_stream(base_url, job_id, url_headers)[0]).status_code == 429:
            assert time.monotonic() < deadline, "the slot of a closed stream was never released"
            time.sleep(0.1)
        assert again.status_code == 200
