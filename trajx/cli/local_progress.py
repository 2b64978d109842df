"""A rich progress bar for `trajx run`, fed by the executor's progress callback."""

from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trajx.executors import RunProgress


class JobProgress:
    """One bar over the job's units of work (a transfer: targets × steps), showing what
    finished last (its target and eval accuracy, when the executor reports them).

    The bar appears with the first report, so input errors are not printed under an empty bar.
    """

    def __init__(self, console: Console, kind: str) -> None:
        self._progress = Progress(TextColumn(kind), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[latest]}"), TimeElapsedColumn(), console=console)
        self._task = self._progress.add_task(kind, total=None, latest="")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def update(self, progress: RunProgress) -> None:
        """Executor callback (RunContext.on_progress)."""
        self._progress.start()  # idempotent
        self._progress.update(self._task, completed=progress.done, total=progress.total,
                              latest=_latest(progress.data))


def _latest(data: dict) -> str:
    parts = [f"target {data['target']}"] if "target" in data else []
    accuracy = (data.get("metrics") or {}).get("accuracy")
    if accuracy is not None:
        parts.append(f"acc {accuracy:.3f}")
    return " ".join(parts)
