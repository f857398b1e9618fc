"""The `soupbench` command: thin wrappers over the runner, the results reader and the registries."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)
out = Console()


class Listable(str, enum.Enum):
    methods = "methods"
    tasks = "tasks"
    suites = "suites"


class Format(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


def _quiet_libraries() -> None:
    """The run shows its own progress bars; the libraries' bars and deprecation chatter only hide them."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@app.command()
def run(
    suite: Annotated[str, typer.Option(help="Embedded suite name or path to a suite YAML.")] = "micro",
    method: Annotated[Optional[list[str]], typer.Option(help="Method(s) to run; default: all.")] = None,
    task: Annotated[Optional[list[str]], typer.Option(help="Task(s) to run; default: the suite's.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Use the suite's first N seeds.")] = 1,
    db: Annotated[Optional[str], typer.Option(help="Database URL or SQLite path.")] = None,
) -> None:
    """Run the grid (methods x tasks x seeds), skipping stored cells, then print the results table."""
    from benchmark.progress import RichReporter
    from benchmark.results import format_records, open_readonly
    from benchmark.runner import run_grid
    from benchmark.storage import open_store, resolve_db_url
    from benchmark.suite import SuiteError, load_suite
    from benchmark.registry import UnknownNameError

    try:
        spec = load_suite(suite)
    except (SuiteError, UnknownNameError) as err:
        _fail(str(err))
    _quiet_libraries()
    if seeds > len(spec.seeds):
        _fail(f"--seeds {seeds}: suite {spec.name!r} lists only {len(spec.seeds)} seeds {list(spec.seeds)}")
    url = resolve_db_url(db)
    store = open_store(url)
    try:
        with RichReporter(console) as reporter:
            summary = run_grid(spec, store, methods=method, tasks=task, seeds=list(spec.seeds[:seeds]), reporter=reporter)
    except (ValueError, UnknownNameError) as err:
        _fail(str(err))
    finally:
        store.close()
    console.print(f"computed {summary.computed} cells, {summary.skipped} already stored; database: {url}")
    reader = open_readonly(url)
    out.print(format_records(reader.records(spec.name), "table"))
    reader.close()
    for label, seed, error in summary.failed:
        console.print(f"[red]failed:[/red] {label} (seed {seed}): {error}")
    if summary.failed:
        raise typer.Exit(1)


@app.command("list")
def list_(what: Listable) -> None:
    """List the registered methods, tasks or suites."""
    if what is Listable.methods:
        from benchmark import catalog

        table = Table("method", "family", "consumes", "description")
        registry = catalog.registry()
        for name in registry.names():
            cls = registry.get(name)
            shown = "expert-<skill>" if name == "expert" else name
            table.add_row(shown, cls.family, cls.consumes.value, cls.description)
    elif what is Listable.tasks:
        from benchmark.taskinfo import TASKS

        table = Table("task", "kind", "skills", "primary metric", "description")
        for name in TASKS:
            info = TASKS.get(name)
            table.add_row(name, info.kind, ", ".join(info.skills), info.primary_metric, info.description)
    else:
        from benchmark.suite import SUITES, load_suite

        table = Table("suite", "skills", "tasks", "description")
        for name in SUITES:
            spec = load_suite(name)
            table.add_row(name, ", ".join(spec.skill_names), ", ".join(spec.tasks), spec.description.strip())
    out.print(table)


@app.command()
def results(
    db: Annotated[Optional[str], typer.Option(help="Database URL or SQLite path.")] = None,
    suite: Annotated[Optional[str], typer.Option(help="Only this suite.")] = None,
    format: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
) -> None:
    """What is stored: one record per (suite, method, task, metric), mean over seeds with 95% CI."""
    from benchmark.results import format_records, open_readonly
    from benchmark.storage import resolve_db_url

    try:
        reader = open_readonly(resolve_db_url(db))
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    records = reader.records(suite)
    reader.close()
    text = format_records(records, format.value)
    if format is Format.table:
        out.print(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
def validate(
    db: Annotated[Optional[str], typer.Option(help="Database URL or SQLite path.")] = None,
    suite: Annotated[str, typer.Option(help="Suite name or YAML path.")] = "micro",
) -> None:
    """The suite's validity figures per task; exits 0 only when the suite meets its bar."""
    from benchmark.results import open_readonly
    from benchmark.storage import resolve_db_url
    from benchmark.suite import load_suite
    from benchmark.taskinfo import TASKS
    from benchmark.validity import assess

    spec = load_suite(suite)
    try:
        reader = open_readonly(resolve_db_url(db))
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    primary = {}
    for run_row in reader.runs(suite=spec.name, status="ok"):
        for score in run_row.scores:
            if score.primary:
                primary[(run_row.method, run_row.task, run_row.seed)] = score.value
    reader.close()
    if not primary:
        _fail(f"no stored runs for suite {spec.name!r}; run `soupbench run --suite {suite}` first")
    report = assess(primary, [TASKS.get(t) for t in spec.tasks])
    for tv in report:
        table = Table(title=f"{tv.task} ({tv.kind})", show_header=True)
        table.add_column("figure")
        table.add_column("value", justify="right")
        for name, value in tv.figures.items():
            table.add_row(name, "n/a" if value is None else f"{value:.3f}")
        for check in tv.checks:
            mark = "[green]pass[/green]" if check.ok else "[red]FAIL[/red]"
            table.add_row(f"{mark} {check.what} ({check.needed})", "n/a" if check.value is None else f"{check.value:.3f}")
        out.print(table)
    ok = all(tv.ok for tv in report)
    out.print("[green]the suite meets its bar[/green]" if ok else "[red]the suite does not meet its bar[/red]")
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()
