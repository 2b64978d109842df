"""The uvicorn server `trajx serve` runs: it ends open event streams when shutdown begins.

uvicorn waits for open responses before it stops, and an event stream lasts as long as
its job: a dashboard tab following a job would hold a Ctrl-C or SIGTERM up for that long.
The streams end at their next poll instead; clients resume with `Last-Event-ID`.
"""

from types import FrameType

import uvicorn

from app.api.event_stream import stream_slots


class ApiServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        stream_slots(self.config.app).end_all()
        super().handle_exit(sig, frame)
