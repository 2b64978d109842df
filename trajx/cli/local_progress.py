"""A rich progress bar per target for `trajx run`, fed by the runner's progress callback."""

from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class TransferProgress:
    """One bar per target (T steps each), showing the latest eval accuracy when there is one.

    The bars appear with the first step, so input errors are not printed under empty bars.
    """

    def __init__(self, console: Console, targets: int, steps: int) -> None:
        self._progress = Progress(TextColumn("target {task.fields[target]}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[metric]}"),
                                  TimeElapsedColumn(), console=console)
        self._tasks = [self._progress.add_task("transfer", total=steps, target=i, metric="")
                       for i in range(targets)]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def update(self, progress) -> None:
        """Runner callback: `progress` is a trajx.runner.RunProgress."""
        accuracy = progress.metrics.get("accuracy")
        metric = "" if accuracy is None else f"acc {accuracy:.3f}"
        self._progress.start()  # idempotent
        self._progress.update(self._tasks[progress.target], completed=progress.step, metric=metric)
