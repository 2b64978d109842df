"""`trajx.Client`: the Python client of the trajx HTTP API (httpx and pydantic, no torch)."""

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
from httpx_sse import EventSource, SSEError

from trajx.client.config import resolve_api_key, resolve_url
from trajx.client.download import download_artifact, result_path
from trajx.client.errors import ApiError, ServerUnreachable, WaitTimeout
from trajx.client.hashing import iter_file, sha256_file
from trajx.client.models import Artifact, Event, Job, ResultFile
from trajx.client.progress import ByteCounter, TransferProgress
from trajx.client.transport import Transport


class Client:
    """A session with one trajx server.

    `base_url` and `api_key` default to `TRAJX_URL` / `TRAJX_API_KEY`, then to the
    embedded default on this machine and its local key file (sent only to a loopback
    URL). Every method raises `ApiError` for an error answer (with the problem+json
    `code`) and `ServerUnreachable` when no answer comes after the retries. `progress`, if given,
    is called as `progress(file name, done bytes, total bytes)` during uploads and downloads.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 progress: TransferProgress | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = resolve_url(base_url)
        self.progress = progress
        self._transport = Transport(self.base_url, resolve_api_key(api_key, self.base_url), timeout=timeout,
                                    retries=retries, backoff=backoff, transport=transport)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- artifacts ---------------------------------------------------------------------------

    def find_artifact(self, sha256: str) -> Artifact | None:
        """One of the caller's artifacts with these bytes (the server lists newest first), or None."""
        page = self._get("/v1/artifacts", params={"sha256": sha256, "limit": 1})
        data = page.get("data") or []
        return Artifact.from_dict(data[0]) if data else None

    def get_artifact(self, artifact_id: str) -> Artifact:
        return Artifact.from_dict(self._get(f"/v1/artifacts/{artifact_id}"))

    def upload(self, path: str | Path, name: str | None = None, *,
               idempotency_key: str | None = None) -> Artifact:
        """Upload a file, streamed; skipped when the server already holds the same sha256.

        Returns the (new or existing) artifact. The server validates safetensors
        headers and answers 4xx (ApiError) for a file it refuses.
        """
        path = Path(path)
        existing = self.find_artifact(sha256_file(path))
        if existing is not None:
            return existing
        size = path.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        counter = ByteCounter(self.progress, path.name, size)

        def body() -> Iterator[bytes]:
            counter.restart(0)  # a retried request sends the file again
            for chunk in iter_file(path):
                counter.advance(len(chunk))
                yield chunk

        response = self._transport.request("POST", "/v1/artifacts", content=body,
                                           params={"name": name or path.name}, headers=headers)
        return Artifact.from_dict(response.json())

    def download(self, artifact_id: str, dest: str | Path) -> Path:
        """Download an artifact to `dest` (resumable, sha256-verified); see `download_artifact`."""
        artifact = self.get_artifact(artifact_id)
        return download_artifact(self._transport, artifact_id, artifact.sha256, artifact.size,
                                 Path(dest), progress=self.progress)

    def download_result(self, file: ResultFile, out_dir: str | Path) -> Path:
        """Download one result file of a job to `out_dir / file.path`, verified against the
        manifest's sha256 and size (no extra request for the artifact's metadata)."""
        return download_artifact(self._transport, file.artifact, file.sha256, file.size,
                                 result_path(Path(out_dir), file.path), progress=self.progress, label=file.path)
    def artifact_json(self, artifact_id: str) -> Any:
        """The content of a (small) JSON artifact, such as a job's report, parsed."""
        return self._transport.request("GET", f"/v1/artifacts/{artifact_id}/content").json()

    # -- jobs --------------------------------------------------------------------------------

    def create_job(self, spec: dict[str, Any], *, idempotency_key: str | None = None,
                   webhook: dict[str, Any] | None = None, name: str | None = None,
                   labels: list[str] | None = None) -> Job:
        """Submit a job spec; with the same `idempotency_key` the existing job comes back
        (then its `replayed` is True: the server said `Idempotent-Replayed: true`).
        `name` and `labels` are what people find the run by (editable with `update_job`)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body: dict[str, Any] = {"spec": spec, "webhook": webhook}
        if name is not None:
            body["name"] = name
        if labels:
            body["labels"] = labels
        response = self._transport.request("POST", "/v1/jobs", json=body, headers=headers)
        job = Job.from_dict(response.json())
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        return job.model_copy(update={"replayed": replayed})

    def get_job(self, job_id: str) -> Job:
        return Job.from_dict(self._get(f"/v1/jobs/{job_id}"))

    def list_jobs(self, status: str | None = None, limit: int = 50, **filters: str | None) -> list[Job]:
        """The caller's jobs, newest first as the server orders them, at most `limit`;
        `filters`: `kind`, `method`, `arch`, `label`, `q` (a part of the name)."""
        params = {key: value for key, value in {"status": status, **filters}.items() if value}
        return [Job.from_dict(doc) for doc in self._pages("/v1/jobs", params, limit)]

    def update_job(self, job_id: str, **changes: Any) -> Job:
        """Set a job's `name` and/or `labels` (None clears the name)."""
        return Job.from_dict(self._transport.request("PATCH", f"/v1/jobs/{job_id}", json=changes).json())

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop (queued: at once; running: at its next step). 409 once finished."""
        return Job.from_dict(self._transport.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def events(self, job_id: str, after: int | None = None, limit: int = 10_000) -> list[Event]:
        """The job's events in order (created, claimed, progress, ..., webhook deliveries).

        `after`: only events with a larger id (poll with the last id seen to follow a job).
        """
        path = f"/v1/jobs/{job_id}/events"
        return [Event.from_dict(doc) for doc in self._pages(path, {}, limit, cursor=after)]

    def follow_events(self, job_id: str, after: int | None = None, *, reconnects: int = 5) -> Iterator[Event]:
        """Yield the job's events as they happen (server-sent events) until it is finished.

        Starts after event id `after`. A dropped stream is resumed with `Last-Event-ID`
        (up to `reconnects` times in a row without a new event, then ServerUnreachable);
        a server that cannot stream (too many open streams, or no event stream) is polled.
        """
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream",
                       **({"Last-Event-ID": str(after)} if after is not None else {})}
            try:
                with self._transport.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
                    for message in EventSource(response).iter_sse():
                        if not message.data:  # `retry:` advice or a keep-alive, no job event
                            continue
                        event = Event.from_dict(message.json())
                        after, failures = int(event.id), 0
                        yield event
            except (ApiError, SSEError) as exc:
                # 429: this tenant has too many streams open; SSEError: an answer that is no stream.
                if isinstance(exc, ApiError) and exc.status != 429:
                    raise
                yield from self._poll_events(job_id, after)
                return
            except httpx.TransportError as exc:
                failures += 1
                if failures > reconnects:
                    raise ServerUnreachable(f"event stream of {job_id} keeps breaking: {exc}") from exc
                time.sleep(min(2.0 ** failures * 0.25, 5.0))
                continue
            # The server ends a stream when the job is finished (or after its time limit: then resume).
            if self.get_job(job_id).done:
                yield from self.events(job_id, after=after)
                return

    def _poll_events(self, job_id: str, after: int | None, interval: float = 2.0) -> Iterator[Event]:
        while True:
            # Status first: a job seen finished has its final event in the read that follows.
            done = self.get_job(job_id).done
            new = self.events(job_id, after=after)
            yield from new
            if new:
                after = int(new[-1].id)
            elif done:
                return
            else:
                time.sleep(interval)

    def wait(self, job_id: str, timeout: float | None = None, *, poll_interval: float = 0.5,
             max_interval: float = 5.0, on_update: Callable[[Job], None] | None = None) -> Job:
        """Poll until the job is finished and return it (whatever its final status).

        The poll interval grows by half each time nothing changed, up to
        `max_interval`, and resets on any change. Raises WaitTimeout (carrying the
        last job seen) after `timeout` seconds; the job itself keeps running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval, seen = poll_interval, None
        while True:
            job = self.get_job(job_id)
            state = (job.status, job.progress)
            if state != seen:
                interval, seen = poll_interval, state
                if on_update is not None:
                    on_update(job)
            if job.done:
                return job
            if deadline is not None and time.monotonic() + interval > deadline:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"job {job_id} still {job.status} after {timeout:g} s", job)
                interval = remaining
            time.sleep(interval)
            interval = min(interval * 1.5, max_interval)

    # -- plumbing ----------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._transport.request("GET", path, params=params).json()

    def _pages(self, path: str, params: dict[str, Any], limit: int,
               cursor: str | int | None = None) -> Iterator[dict[str, Any]]:
        """Follow `next_cursor` (from `cursor`) until `limit` documents or the last page."""
        count = 0
        while True:
            page = self._get(path, {**params, "limit": min(limit - count, 100),
                                    **({"cursor": cursor} if cursor is not None else {})})
            for doc in page.get("data") or []:
                yield doc
                count += 1
                if count >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor:
                return
