"""Rich progress bars for the runner's long steps (pretraining, expert training, CAT, evaluation)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from benchmark.runner import Reporter


class RichReporter:
    """A `Reporter` whose bars live in one rich Progress display; each label gets its own bar."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.display = Progress(
            TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )

    def __enter__(self) -> Reporter:
        self.display.start()
        return Reporter(progress=self._bar, log=self.console.log)

    def __exit__(self, *exc: object) -> None:
        self.display.stop()

    def _bar(self, label: str):
        task = None

        def update(step: int, total: int, loss: float) -> None:
            nonlocal task
            if task is None:
                task = self.display.add_task(label, total=total, loss=loss)
            self.display.update(task, completed=step, loss=loss)

        return update
