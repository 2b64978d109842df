"""One HTTP session to the API: auth header, retries (tenacity: exponential backoff with
jitter, or the server's `Retry-After`), problem+json errors."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from trajx.client.errors import ApiError, ServerUnreachable
from trajx.version import __version__

# Answers worth a retry: the service is restarting or overloaded, the request did nothing.
RETRY_STATUSES = frozenset({502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
# A server asking for a longer pause than this gets this: the caller's own timeouts stay meaningful.
MAX_RETRY_AFTER_SECONDS = 30.0


class _RetryableAnswer(Exception):
    """A 502/503/504 worth another try; carries the (read) answer for the last try."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = _retry_after_seconds(response)


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (the delay form; an HTTP date is not honoured), capped."""
    try:
        return min(max(float(response.headers["Retry-After"]), 0.0), MAX_RETRY_AFTER_SECONDS)
    except (KeyError, ValueError):
        return None


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

    A request is retried (up to `retries` times) when the connection could not be made,
    or, for safe methods and requests carrying an Idempotency-Key, on a dropped connection
    or a 502/503/504. Between tries it waits what the answer's `Retry-After` asks (at most
    MAX_RETRY_AFTER_SECONDS), else exponential backoff from `backoff` seconds with up to
    `backoff` of random jitter, so clients that failed together do not retry together.
    """

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float, retries: int,
                 backoff: float, transport: httpx.BaseTransport | None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        headers = {"User-Agent": f"trajx-client/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url
        self.retries = retries
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(multiplier=backoff, jitter=backoff)
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

        def worth_retrying(exc: BaseException) -> bool:
            return isinstance(exc, httpx.ConnectError) or (
                retry_any and isinstance(exc, (httpx.TransportError, _RetryableAnswer)))

        retrying = Retrying(stop=stop_after_attempt(self.retries + 1), wait=self._wait,
                            retry=retry_if_exception(worth_retrying), sleep=self._sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    return self._send_once(method, path, content, kwargs, retry_any)
        except _RetryableAnswer as exc:
            return exc.response  # the last try's answer: the caller turns it into ApiError
        except httpx.ConnectError as exc:
            raise ServerUnreachable(f"cannot reach {self.base_url}: {exc}") from exc
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"{method} {path} on {self.base_url}: {exc}") from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _send_once(self, method: str, path: str, content: Callable[[], Any] | None, kwargs: dict[str, Any],
                   retry_any: bool) -> httpx.Response:
        body = {"content": content()} if content is not None else {}
        response = self._http.send(self._http.build_request(method, path, **body, **kwargs), stream=True)
        if response.status_code in RETRY_STATUSES and retry_any:
            response.read()
            response.close()
            raise _RetryableAnswer(response)
        return response

    def _wait(self, state: RetryCallState) -> float:
        """The server's Retry-After when it sent one, else backoff with jitter."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _RetryableAnswer) and exc.retry_after is not None:
            return exc.retry_after
        return self._backoff(state)
