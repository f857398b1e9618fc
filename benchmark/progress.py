"""The run's terminal display: rich progress bars for the long steps (pretraining, training, the
merge-and-evaluate grid) above a results table that fills in as each merged model's cells are
stored, so the first scores show long before the grid ends."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from benchmark.pool import Reporter
from benchmark.storage import RunRecord


class LiveResults:
    """Primary scores by method (rows, in the order they finish) and task (columns), mean over the
    seeds stored so far in this run; a failed cell shows as such."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[float]] = {}
        self.failed: set[tuple[str, str]] = set()
        self.methods: list[str] = []
        self.tasks: list[str] = []

    def add(self, records: list[RunRecord]) -> None:
        for record in records:
            if record.method not in self.methods:
                self.methods.append(record.method)
            if record.task not in self.tasks:
                self.tasks.append(record.task)
            primary = next((s.value for s in record.scores if s.primary), None)
            if record.status != "ok" or primary is None:
                self.failed.add((record.method, record.task))
            else:
                self.values.setdefault((record.method, record.task), []).append(primary)

    def __rich__(self) -> Table:
        table = Table(title="scores so far", caption="primary metric; (n): mean of n seeds", title_justify="left")
        table.add_column("method")
        for task in self.tasks:
            table.add_column(task, justify="right")
        for method in self.methods:
            cells = []
            for task in self.tasks:
                values = self.values.get((method, task))
                if values:
                    seeds = f" ({len(values)})" if len(values) > 1 else ""
                    cells.append(f"{sum(values) / len(values):.3f}{seeds}")
                else:
                    cells.append("[red]failed[/red]" if (method, task) in self.failed else "")
            table.add_row(method, *cells)
        return table


class RichReporter:
    """A `Reporter` whose bars and live results table share one rich Live display."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[note]:<11}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console,
        )
        self.results = LiveResults()
        self.live = Live(Group(self.bars, self.results), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> Reporter:
        self.live.start()
        return Reporter(progress=self._bar, log=self.console.log, stored=self._stored)

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
        if not self.console.is_terminal:  # rich ends the last render with a newline on terminals only:
            self.console.line()           # in a pipe the next line (an `error:`) would be glued to it

    def _stored(self, records: list[RunRecord]) -> None:
        self.results.add(records)
        self.live.refresh()

    def _bar(self, label: str):
        task = None

        def update(step: int, total: int, loss: float) -> None:
            nonlocal task
            note = "" if loss != loss else f"loss {loss:.3f}"  # NaN: a bar that counts, not trains
            if task is None:
                task = self.bars.add_task(label, total=total, note=note)
            self.bars.update(task, completed=step, note=note)

        return update
