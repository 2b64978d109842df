"""Server-sent events (the `text/event-stream` format of the HTML standard), parsed from lines."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Yield each dispatched message of a stream given line by line (without line endings).

    Comment lines (`: keep-alive`) and `retry:` fields are skipped; a message without
    `data` is not dispatched, as the standard says.
    """
    event, data, last_id = "", [], None
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
