"""Rich progress bars for the runner's long steps: pretraining, training, and the merge-and-evaluate grid."""

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
            TextColumn("{task.fields[note]:<11}"), TimeElapsedColumn(), TimeRemainingColumn(),
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
            note = "" if loss != loss else f"loss {loss:.3f}"  # NaN: a bar that counts, not trains
            if task is None:
                task = self.display.add_task(label, total=total, note=note)
            self.display.update(task, completed=step, note=note)

        return update
