"""One HTTP session to the API: auth header, retries with backoff, problem+json errors."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from trajx.client.errors import ApiError, ServerUnreachable
from trajx.version import __version__

# Answers worth a retry: the service is restarting or overloaded, the request did nothing.
RETRY_STATUSES = frozenset({502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def problem_from_response(response: httpx.Response) -> ApiError:
    """Turn an error answer into ApiError, whether or not the body is problem+json."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": response.text[:500]}
    code = str(body.get("code") or f"http_{response.status_code}")
    detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
    return ApiError(response.status_code, code, detail, body)


class Transport:
    """Sends requests to `base_url` with `api_key`; retries what is safe to retry.

    A request is retried (up to `retries` times, exponential backoff from `backoff`
    seconds) when the connection could not be made, or, for safe methods and
    requests carrying an Idempotency-Key, on a dropped connection or a 502/503/504.
    """

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float, retries: int,
                 backoff: float, transport: httpx.BaseTransport | None) -> None:
        headers = {"User-Agent": f"trajx-client/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout,
                                  transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send and read a whole answer; raise ApiError on >= 400."""
        with self.stream(method, path, **kwargs) as response:
            response.read()
            return response

    @contextmanager
    def stream(self, method: str, path: str, *, content: Callable[[], Any] | None = None,
               **kwargs: Any) -> Iterator[httpx.Response]:
        """Open a streamed answer (status < 400 guaranteed); `content` makes a fresh body per try."""
        response = self._send_with_retries(method, path, content, kwargs)
        try:
            if response.status_code >= 400:
                response.read()
                raise problem_from_response(response)
            yield response
        finally:
            response.close()

    def _send_with_retries(self, method: str, path: str, content: Callable[[], Any] | None,
                           kwargs: dict[str, Any]) -> httpx.Response:
        headers = kwargs.get("headers") or {}
        retry_any = method in SAFE_METHODS or "Idempotency-Key" in headers
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            body = {"content": content()} if content is not None else {}
            try:
                request = self._http.build_request(method, path, **body, **kwargs)
                response = self._http.send(request, stream=True)
            except httpx.ConnectError as exc:
                if last:
                    raise ServerUnreachable(f"cannot reach {self.base_url}: {exc}") from exc
            except httpx.TransportError as exc:
                if last or not retry_any:
                    raise ServerUnreachable(f"{method} {path} on {self.base_url}: {exc}") from exc
            else:
                if response.status_code not in RETRY_STATUSES or not retry_any or last:
                    return response
                response.close()
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")
