"""Client-side logic only (retries, error mapping, dedup, resume, wait), over httpx.MockTransport.

Everything that involves the real service is in test_cli_e2e.py.
"""

import hashlib
import json
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError

from trajx.client import (
    ApiError,
    Artifact,
    ChecksumMismatch,
    Client,
    Event,
    InvalidLocalInput,
    Job,
    ServerUnreachable,
    WaitTimeout,
)
from trajx.client.config import LOCAL_KEY_FILENAME
from trajx.client.download import part_path
from trajx.client.transport import Transport

ART = "art_" + "a" * 32


def client_for(handler) -> Client:
    return Client("http://trajx.test", "trx_test", backoff=0, transport=httpx.MockTransport(handler))


def job_doc(status: str, step: int = 0) -> dict:
    return {"id": "job_" + "b" * 32, "kind": "transfer", "status": status, "spec": {},
            "progress": {"step": step, "total": 3}, "attempts": 1, "error": None,
            "result": None, "summary": None}


def test_get_is_retried_on_503_then_succeeds():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(503) if len(calls) < 3 else httpx.Response(200, json=job_doc("queued"))

    assert client_for(handler).get_job("job_x").status == "queued"
    assert len(calls) == 3
    assert calls[0].headers["Authorization"] == "Bearer trx_test"


def test_post_without_idempotency_key_is_not_retried_on_503():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(503, json={"code": "unavailable", "detail": "busy"})

    with pytest.raises(ApiError) as err:
        client_for(handler).create_job({"kind": "transfer"})
    assert len(calls) == 1
    assert (err.value.status, err.value.code, err.value.exit_code) == (503, "unavailable", 5)


def test_post_with_idempotency_key_is_retried():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(502) if len(calls) == 1 else httpx.Response(202, json=job_doc("queued"))

    client_for(handler).create_job({}, idempotency_key="k1")
    assert [c.headers["Idempotency-Key"] for c in calls] == ["k1", "k1"]


def test_connection_refused_is_server_unreachable_exit_5():
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ServerUnreachable) as err:
        client_for(handler).get_job("job_x")
    assert err.value.exit_code == 5


def test_problem_json_becomes_api_error_with_code_and_field_errors():
    problem = {"type": "about:blank", "title": "Unprocessable", "status": 422, "code": "checkpoint_mismatch",
               "detail": "fc1.weight shape differs", "errors": [{"tensor": "fc1.weight", "message": "[4, 2] vs [4, 3]"}]}

    def handler(request):
        return httpx.Response(422, json=problem, headers={"Content-Type": "application/problem+json"})

    with pytest.raises(ApiError) as err:
        client_for(handler).create_job({})
    assert (err.value.code, err.value.detail, err.value.exit_code) == ("checkpoint_mismatch", "fc1.weight shape differs", 2)
    assert err.value.errors == problem["errors"]


def test_error_without_problem_body_still_has_a_code():
    with pytest.raises(ApiError) as err:
        client_for(lambda r: httpx.Response(404, text="nope")).get_job("job_x")
    assert (err.value.status, err.value.code) == (404, "http_404")


def test_upload_is_skipped_when_server_has_the_sha256(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    methods = []

    def handler(request):
        methods.append(request.method)
        assert request.url.params["sha256"] == digest
        return httpx.Response(200, json={"data": [{"id": ART, "sha256": digest, "size": 7}], "next_cursor": None})

    assert client_for(handler).upload(path).id == ART
    assert methods == ["GET"]


def test_upload_streams_body_with_name_and_length(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"x" * 3_000_000)
    seen = {}

    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, json={"data": [], "next_cursor": None})
        seen.update(name=request.url.params["name"], length=request.headers["Content-Length"], body=request.read())
        return httpx.Response(201, json={"id": ART, "sha256": "s", "size": 3_000_000})

    client_for(handler).upload(path)
    assert seen == {"name": "w.safetensors", "length": "3000000", "body": b"x" * 3_000_000}


class ContentServer:
    """Serves one artifact with Range support; can drop the connection once mid-body."""

    def __init__(self, content: bytes, sha256: str | None = None, break_after: int | None = None):
        self.content = content
        self.sha256 = sha256 or hashlib.sha256(content).hexdigest()
        self.break_after = break_after
        self.ranges: list[str | None] = []

    def __call__(self, request):
        if not request.url.path.endswith("/content"):
            return httpx.Response(200, json={"id": ART, "sha256": self.sha256, "size": len(self.content)})
        self.ranges.append(request.headers.get("Range"))
        start = int(request.headers["Range"][6:-1]) if "Range" in request.headers else 0
        body = self.content[start:]
        if self.break_after is not None:
            body, self.break_after = body[: self.break_after], None
            return httpx.Response(200 if start == 0 else 206, stream=BrokenStream(body))
        return httpx.Response(206 if start else 200, content=body)


class BrokenStream(httpx.SyncByteStream):
    def __init__(self, head: bytes):
        self.head = head

    def __iter__(self):
        yield self.head
        raise httpx.ReadError("connection reset")


def test_download_resumes_a_part_file_with_range(tmp_path):
    content = bytes(range(256)) * 1000
    server = ContentServer(content)
    dest = tmp_path / "out" / "last.safetensors"
    dest.parent.mkdir()
    part_path(dest).write_bytes(content[:1234])

    client_for(server).download(ART, dest)

    assert dest.read_bytes() == content
    assert server.ranges == ["bytes=1234-"]
    assert not part_path(dest).exists()


def test_download_resumes_after_the_connection_drops_mid_transfer(tmp_path):
    content = b"0123456789" * 10_000
    server = ContentServer(content, break_after=40_000)
    dest = tmp_path / "a.bin"

    client_for(server).download(ART, dest)

    assert dest.read_bytes() == content
    assert server.ranges == [None, "bytes=40000-"]


def test_download_with_wrong_sha256_is_refused_and_part_removed(tmp_path):
    server = ContentServer(b"tampered bytes", sha256="0" * 64)
    dest = tmp_path / "a.bin"
    with pytest.raises(ChecksumMismatch):
        client_for(server).download(ART, dest)
    assert not dest.exists() and not part_path(dest).exists()
    assert server.ranges == [None]  # a fresh download that fails is not tried again


def test_a_corrupt_part_file_is_discarded_and_downloaded_again_from_zero(tmp_path):
    content = bytes(range(256)) * 100
    server = ContentServer(content)
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(b"\xff" * 1000)  # a stale part file: not this artifact's first bytes

    client_for(server).download(ART, dest)

    assert dest.read_bytes() == content
    assert server.ranges == ["bytes=1000-", None]
    assert not part_path(dest).exists()


def test_a_corrupt_part_of_full_length_is_downloaded_again(tmp_path):
    content = b"abc" * 1000
    server = ContentServer(content)
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(b"x" * len(content))

    client_for(server).download(ART, dest)

    assert dest.read_bytes() == content
    assert server.ranges == [None]


def test_download_is_skipped_when_the_destination_already_has_the_bytes(tmp_path):
    content = b"already here" * 100
    server = ContentServer(content)
    dest = tmp_path / "a.bin"
    dest.write_bytes(content)

    assert client_for(server).download(ART, dest) == dest

    assert server.ranges == []  # no content request at all
    assert dest.read_bytes() == content


def test_a_destination_with_other_bytes_is_replaced(tmp_path):
    content = b"new bytes" * 100
    server = ContentServer(content)
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old bytes" * 100)  # same size, other content

    client_for(server).download(ART, dest)

    assert dest.read_bytes() == content
    assert server.ranges == [None]


def test_progress_callback_sees_every_byte_of_a_resumed_download_and_an_upload(tmp_path):
    content = b"0123456789" * 10_000
    server = ContentServer(content, break_after=40_000)
    reports = []
    client = Client("http://trajx.test", "trx_test", backoff=0, transport=httpx.MockTransport(server),
                    progress=lambda name, done, total: reports.append((name, done, total)))

    client.download(ART, tmp_path / "a.bin")
    (tmp_path / "up.bin").write_bytes(b"u" * 3_000_000)
    client.upload(tmp_path / "up.bin")  # the server mock lists no artifact: the file is sent

    downloaded = [done for name, done, total in reports if (name, total) == ("a.bin", 100_000)]
    uploaded = [done for name, done, total in reports if (name, total) == ("up.bin", 3_000_000)]
    assert len(downloaded) + len(uploaded) == len(reports)
    assert downloaded == sorted(downloaded) and downloaded[-1] == 100_000
    assert 40_000 in downloaded  # the resume continues from the bytes already there
    assert uploaded[0] == 0 and uploaded == sorted(uploaded) and uploaded[-1] == 3_000_000


def test_resources_parse_datetimes_and_nested_objects_and_ignore_unknown_fields():
    job = Job.from_dict({**job_doc("failed", 2), "created_at": "2025-01-02T03:04:05Z",
                         "error": {"code": "non_finite_loss", "message": "nan", "hint": "lower lr"},
                         "field_from_a_newer_server": {"x": 1}})
    event = Event.from_dict({"id": 7, "type": "progress", "created_at": "2025-01-02T03:04:05.5+00:00",
                             "data": {"step": 1}, "job_id": "job_x"})
    artifact = Artifact.from_dict({"id": ART, "sha256": "s", "size": 3, "kind": "checkpoint",
                                   "tensors": [{"name": "w", "dtype": "F32", "shape": [3], "offsets": [0, 12]}]})

    assert job.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC) and job.started_at is None
    assert (job.error.code, job.error.message, job.progress.step, job.done) == ("non_finite_loss", "nan", 2, True)
    assert job.raw["field_from_a_newer_server"] == {"x": 1}
    assert event.type == "progress" and event.created_at.microsecond == 500_000
    assert artifact.tensors[0].shape == [3] and artifact.tensors[0].name == "w"
    with pytest.raises(TypeError, match="status"):
        Job.from_dict({"id": "job_x"})
    with pytest.raises(ValidationError, match="frozen"):
        job.status = "succeeded"  # frozen: a job seen is a snapshot


@pytest.fixture
def local_key(tmp_path, monkeypatch):
    """An embedded server's local key file in $TRAJX_DATA_DIR, and no key in the environment."""
    (tmp_path / LOCAL_KEY_FILENAME).write_text("trx_local\n")
    monkeypatch.setenv("TRAJX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TRAJX_API_KEY", raising=False)
    return "trx_local"


def _authorization_sent_to(url: str) -> str | None:
    seen = []

    def handler(request):
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json=job_doc("queued"))

    Client(url, transport=httpx.MockTransport(handler)).get_job("job_x")
    return seen[0]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000",
                                 "http://127.0.0.2:9000"])
def test_local_key_file_is_sent_to_a_loopback_server(local_key, url):
    assert _authorization_sent_to(url) == f"Bearer {local_key}"


@pytest.mark.parametrize("url", ["https://trajx.example.com", "http://10.0.0.5:8000",
                                 "http://localhost.example.com:8000"])
def test_local_key_file_is_never_sent_to_a_remote_server(local_key, url):
    assert _authorization_sent_to(url) is None


def test_an_explicit_key_is_sent_anywhere(local_key, monkeypatch):
    monkeypatch.setenv("TRAJX_API_KEY", "trx_env")
    assert _authorization_sent_to("https://trajx.example.com") == "Bearer trx_env"


def test_wait_returns_terminal_job_and_reports_each_change():
    states = iter([job_doc("queued"), job_doc("running", 1), job_doc("running", 1), job_doc("running", 2),
                   job_doc("succeeded", 3)])
    seen = []
    job = client_for(lambda r: httpx.Response(200, json=next(states))).wait(
        "job_x", timeout=10, poll_interval=0.001, on_update=lambda j: seen.append((j.status, j.progress.step)))
    assert job.status == "succeeded"
    assert seen == [("queued", 0), ("running", 1), ("running", 2), ("succeeded", 3)]


def test_wait_timeout_carries_the_last_job_seen():
    with pytest.raises(WaitTimeout) as err:
        client_for(lambda r: httpx.Response(200, json=job_doc("running", 1))).wait("job_x", timeout=0.05,
                                                                                   poll_interval=0.01)
    assert err.value.exit_code == 4
    assert err.value.job.status == "running"


def test_list_jobs_follows_cursors_up_to_limit():
    def handler(request):
        cursor = request.url.params.get("cursor")
        page = {None: (["queued", "running"], "c2"), "c2": (["failed"], None)}[cursor]
        return httpx.Response(200, json={"data": [job_doc(s) for s in page[0]], "next_cursor": page[1]})

    assert [j.status for j in client_for(handler).list_jobs()] == ["queued", "running", "failed"]
    assert len(client_for(handler).list_jobs(limit=2)) == 2


def manifest_entry(path: str, role: str, target: int | None, artifact: str, content: bytes = b"") -> dict:
    return {"role": role, "target": target, "path": path, "sha256": hashlib.sha256(content).hexdigest(),
            "size": len(content), "metadata": {}, "artifact": artifact}


def test_result_files_come_from_the_manifest_as_the_server_sent_it():
    files = [manifest_entry("t0/final.safetensors", "last", 0, "art_1"),
             manifest_entry("summary.json", "report", None, "art_3")]
    job = client_for(lambda r: httpx.Response(200, json={
        **job_doc("succeeded"), "result": {"files": files, "targets": [{"last": "art_1"}], "report": "art_3"}}
    )).get_job("job_x")
    assert job.result_files() == {"t0/final.safetensors": "art_1", "summary.json": "art_3"}
    assert job.result_file("last", 0).artifact == "art_1" and job.result_file("last", 1) is None
    assert json.loads(json.dumps(job.raw))["status"] == "succeeded"


def test_download_result_uses_the_manifests_hash_and_path(tmp_path):
    content = b"result bytes" * 100
    server = ContentServer(content)
    requested = []
    job = Job.from_dict({**job_doc("succeeded"),
                         "result": {"files": [manifest_entry("target-0/last.safetensors", "last", 0, ART, content)]}})

    def handler(request):
        requested.append(request.url.path)
        return server(request)

    path = client_for(handler).download_result(job.files[0], tmp_path)
    assert path == tmp_path / "target-0" / "last.safetensors" and path.read_bytes() == content
    assert requested == [f"/v1/artifacts/{ART}/content"]  # no metadata round trip


@pytest.mark.parametrize("path", ["../escape.bin", "/etc/passwd", "a/../../b"])
def test_a_result_path_leaving_the_download_directory_is_refused(tmp_path, path):
    file = Job.from_dict({**job_doc("succeeded"), "result": {"files": [manifest_entry(path, "x", None, ART)]}}).files[0]
    with pytest.raises(InvalidLocalInput):
        client_for(ContentServer(b"")).download_result(file, tmp_path / "out")


def _transport(statuses: list[tuple[int, dict]], backoff: float, slept: list[float]) -> Transport:
    answers = iter(statuses)

    def handler(request):
        status, headers = next(answers)
        return httpx.Response(status, headers=headers, json=job_doc("queued"))

    return Transport("http://trajx.test", "trx_test", timeout=5, retries=3, backoff=backoff,
                     transport=httpx.MockTransport(handler), sleep=slept.append)


def test_retries_wait_what_retry_after_asks_capped():
    slept: list[float] = []
    transport = _transport([(503, {"Retry-After": "2"}), (503, {"Retry-After": "3600"}), (200, {})], 0.5, slept)
    assert transport.request("GET", "/v1/jobs/x").status_code == 200
    assert slept == [2.0, 30.0]  # MAX_RETRY_AFTER_SECONDS


def test_retries_without_retry_after_back_off_exponentially_with_jitter():
    schedules = []
    for _ in range(2):
        slept: list[float] = []
        transport = _transport([(503, {}), (502, {}), (504, {}), (503, {})], 1.0, slept)
        with pytest.raises(ApiError) as err:
            transport.request("GET", "/v1/jobs/x")
        assert err.value.status == 503 and len(slept) == 3
        for attempt, seconds in enumerate(slept):  # 1, 2, 4 s plus up to 1 s of jitter
            assert 2**attempt <= seconds <= 2**attempt + 1
        schedules.append(slept)
    assert schedules[0] != schedules[1]  # two clients failing together do not retry together


def _event(event_id: int, kind: str) -> dict:
    return {"id": event_id, "type": kind, "created_at": "2025-01-02T03:04:05Z", "data": {}}


def _sse(*events: dict) -> bytes:
    """A stream as the server writes it: `retry:` advice, a keep-alive, then each event."""
    messages = [f"id: {e['id']}\r\nevent: {e['type']}\r\ndata: {json.dumps(e)}\r\n\r\n" for e in events]
    return ("retry: 2000\r\n\r\n: keep-alive\r\n\r\n" + "".join(messages)).encode()


def test_follow_events_skips_keep_alives_and_resumes_a_dropped_stream_after_the_last_event():
    resumed_after = []

    def handler(request):
        if request.headers.get("Accept") != "text/event-stream":  # the status check after the stream ends
            return httpx.Response(200, json=job_doc("succeeded") if request.url.path.endswith("/job_x")
                                  else {"data": [], "next_cursor": None})
        resumed_after.append(request.headers.get("Last-Event-ID"))
        headers = {"Content-Type": "text/event-stream"}
        if len(resumed_after) == 1:
            return httpx.Response(200, headers=headers, stream=BrokenStream(_sse(_event(1, "created"))))
        return httpx.Response(200, headers=headers, content=_sse(_event(2, "succeeded")))

    assert [(e.id, e.type) for e in client_for(handler).follow_events("job_x")] == [(1, "created"), (2, "succeeded")]
    assert resumed_after == [None, "1"]


def test_follow_events_polls_a_server_that_answers_without_a_stream():
    def handler(request):
        if request.url.path.endswith("/events"):
            polled = request.headers.get("Accept") != "text/event-stream" and "cursor" not in request.url.params
            return httpx.Response(200, json={"data": [_event(1, "succeeded")] if polled else [], "next_cursor": None})
        return httpx.Response(200, json=job_doc("succeeded"))

    assert [e.type for e in client_for(handler).follow_events("job_x")] == ["succeeded"]
