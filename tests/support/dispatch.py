"""`RecordingDispatcher`: a Dispatcher that runs nothing and remembers what it was handed.

The `api_app` fixture builds every test app with one (`dispatcher` fixture), so a test reads
`dispatcher.sent` instead of swapping an attribute of the app's frozen services.
"""


class RecordingDispatcher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (job id, queue), in dispatch order
        self.started = False

    def start(self) -> None:
        self.started = True

    def dispatch(self, job_id: str, queue: str) -> None:
        self.sent.append((job_id, queue))

    def marked_at(self, job_id: str) -> float | None:
        return None

    def stop(self) -> None:
        self.started = False

    @property
    def dispatched(self) -> list[str]:
        return [job_id for job_id, _ in self.sent]

    @property
    def queues(self) -> list[str]:
        return [queue for _, queue in self.sent]
