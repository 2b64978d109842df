"""Stream an HTTP request body into a BlobWriter in constant memory.

Raw bodies are copied as they arrive; `multipart/form-data` (`curl -F file=@x`) goes
through python-multipart's streaming parser, so Starlette never spools the file.
Hashing and disk writes happen in a worker thread, in batches of WRITE_CHUNK bytes,
so a large upload does not stall the event loop that answers everyone else.
"""

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.api.problems import ProblemError
from app.core.storage.store import BlobWriter

WRITE_CHUNK = 1024 * 1024
MAX_FORM_FIELD_BYTES = 4096


@dataclass
class UploadedBody:
    filename: str | None  # the multipart part's filename, if any
    form_name: str | None  # a `name` form field, if any


class _ChunkedSink:
    """Hands the writer WRITE_CHUNK-sized batches of pieces, one batch at a time in a thread.

    While batch N is hashed and written, the event loop already receives batch N+1,
    so network and disk work overlap on two cores.
    """

    def __init__(self, writer: BlobWriter) -> None:
        self.writer = writer
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.in_flight: asyncio.Future | None = None

    def add(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_size += len(data)

    async def flush(self, force: bool = False) -> None:
        """Start writing the pending batch once it is big enough (or `force`); `force` also waits."""
        if self.pending and (force or self.pending_size >= WRITE_CHUNK):
            await self.drain()
            batch, self.pending, self.pending_size = self.pending, [], 0
            self.in_flight = asyncio.get_running_loop().run_in_executor(None, self.writer.write, *batch)
        if force:
            await self.drain()

    async def drain(self) -> None:
        """Wait for the batch being written; re-raises its error (e.g. TooLarge)."""
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is not None:
            await in_flight

    async def settle(self) -> None:
        """On failure: let the batch in flight finish before the caller drops the file."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self.drain())


async def _copy_body(request: Request, sink: _ChunkedSink, on_chunk: Callable[[bytes], None]) -> None:
    try:
        async for chunk in request.stream():
            on_chunk(chunk)
            await sink.flush()
        await sink.flush(force=True)
    except BaseException:
        await sink.settle()
        raise


async def receive_body(request: Request, writer: BlobWriter) -> UploadedBody:
    """Copy the request's file into `writer`; ProblemError 400/422 for a broken form.

    Raises storage.TooLarge past the writer's limit and ClientDisconnect when the
    client goes away; the caller's writer context then drops the partial file.
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type == b"multipart/form-data":
        return await _receive_multipart(request, writer, params.get(b"boundary"))
    sink = _ChunkedSink(writer)
    await _copy_body(request, sink, sink.add)
    return UploadedBody(filename=None, form_name=None)


class _FormState:
    """python-multipart callbacks: route the first file part to the sink, keep `name`."""

    def __init__(self, sink: _ChunkedSink) -> None:
        self.sink = sink
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.part: str | None = None  # "file", "name" or None (ignored)
        self.filename: str | None = None
        self.form_name = bytearray()
        self.files_seen = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self.header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
        }

    def on_part_begin(self) -> None:
        self.headers, self.part = {}, None

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        field, filename = options.get(b"name"), options.get(b"filename")
        if filename is not None or field == b"file":
            self.files_seen += 1
            if self.files_seen > 1:
                raise ProblemError(422, "invalid_multipart", "send exactly one file per upload",
                                   errors=[{"field": "file", "message": "more than one file part"}])
            self.part = "file"
            self.filename = filename.decode("utf-8", "replace") if filename else None
        elif field == b"name":
            self.part = "name"

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part == "file":
            self.sink.add(data[start:end])
        elif self.part == "name":
            self.form_name.extend(data[start:end])
            if len(self.form_name) > MAX_FORM_FIELD_BYTES:
                raise ProblemError(422, "invalid_multipart", "the `name` form field is too long",
                                   errors=[{"field": "name", "message": "too long"}])


async def _receive_multipart(request: Request, writer: BlobWriter, boundary: bytes | None) -> UploadedBody:
    if not boundary:
        raise ProblemError(400, "invalid_multipart", "multipart/form-data without a boundary",
                           errors=[{"field": "Content-Type", "message": "missing boundary"}])
    sink = _ChunkedSink(writer)
    state = _FormState(sink)
    try:
        parser = MultipartParser(boundary, state.callbacks())
        await _copy_body(request, sink, parser.write)
        parser.finalize()
    except ValueError as exc:  # python-multipart errors subclass ValueError
        raise ProblemError(400, "invalid_multipart", f"malformed multipart body: {exc}") from None
    if state.files_seen == 0:
        raise ProblemError(422, "invalid_multipart", "the form has no file part (send it as `file`)",
                           errors=[{"field": "file", "message": "missing"}])
    form_name = state.form_name.decode("utf-8", "replace") if state.form_name else None
    return UploadedBody(filename=state.filename, form_name=form_name)
