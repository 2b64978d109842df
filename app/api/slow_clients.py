"""Time limits for slow clients: request headers that never finish, bodies that stall.

uvicorn's `timeout_keep_alive` only covers the idle time between requests, so one
client can hold a connection (and its buffers) forever by trickling header bytes, or
by stopping halfway through a body while a handler waits for it.

- `header_timeout_protocol(seconds)`: uvicorn's h11 protocol, closing a connection
  whose request line and headers are not complete `seconds` after their first byte.
  `trajx serve` runs with it; behind a proxy, the proxy's own limits do the same job
  (docs/deploy.md).
- `BodyTimeoutMiddleware`: ASGI middleware answering 408 (and closing the connection)
  when the app has waited `seconds` for the next piece of a request body. Time the
  app itself spends between reads does not count, nor waits after the body is complete.
"""

import asyncio
import logging

import h11
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("app.api.slow_clients")


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """An H11Protocol subclass (uvicorn's `http=`) with a `seconds` limit on request headers."""

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a client that connects and sends nothing is cut off too

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # headers complete: the body is BodyTimeoutMiddleware's

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closing a connection whose request headers took over %g s", seconds)
                self.transport.close()

    return HeaderTimeoutProtocol


class BodyTimeout(HTTPException):
    """408: the client stopped sending the body (FastAPI passes HTTPExceptions through body parsing)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"no request body data for {seconds:g} s", headers={"Connection": "close"})


class BodyTimeoutMiddleware:
    """Bound the wait for each `http.request` message of a request body."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        body_done = False

        async def bounded_receive() -> Message:
            nonlocal body_done
            if body_done:  # later receives wait for a disconnect (streamed responses): no limit
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except TimeoutError:
                raise BodyTimeout(self.seconds) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)
