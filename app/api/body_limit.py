"""A request-body size limit that answers 413 problem+json (`payload_too_large`).

FastAPI's `max_body_size` answers a declared oversize body in text/plain, past the
problem handlers; here both checks raise an HTTPException, which they render.
"""

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive


def body_limited_route(max_bytes: int) -> type[APIRoute]:
    """A route class (`APIRouter(route_class=...)`) refusing bodies over `max_bytes`.

    The declared Content-Length is checked before reading; a chunked body is counted
    as it arrives and refused as soon as it passes the limit.
    """

    class BodyLimitedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def limited(request: Request) -> Response:
                declared = request.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise _too_large(max_bytes)
                return await handler(Request(request.scope, _counting(request.receive, max_bytes)))

            return limited

    return BodyLimitedRoute


def _counting(receive: Receive, max_bytes: int) -> Receive:
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > max_bytes:
            raise _too_large(max_bytes)
        return message

    return receive_within_limit


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"the request body exceeds the limit of {max_bytes} bytes")
