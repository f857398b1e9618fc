"""The `soupbench` command: thin wrappers over the runner, the results reader and the registries."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from benchmark.cli_options import TaskDirs, use_task_dirs
from benchmark.errors import UserError

console = Console(stderr=True)
out = Console()


class OneLineErrors(TyperGroup):
    """Bad input, from any command, said in one place: `error: <message>` on one line and exit code 2
    (benchmark.errors.UserError), with the traceback only under `soupbench --debug`. Commands raise;
    none of them catches and prints on its own."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as err:
            if ctx.params.get("debug"):
                raise
            _fail(str(err))


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option(
        "--debug", envvar="SOUPBENCH_DEBUG",
        help="Show the full traceback of an error instead of its one line.")] = False,
) -> None:
    pass


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
    # One line however long (scripts grep it), and the message is text, not rich markup.
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _load_method_files(paths: list[Path] | None) -> None:
    """Register the methods of user .py files in the process-wide registry (plugins by path)."""
    from benchmark import catalog

    for path in paths or []:
        try:
            catalog.load_method_file(path)
        except UserError:
            raise
        except Exception as err:  # a broken user file (any error of its own code): say which and why
            raise UserError(f"method file {path}: {type(err).__name__}: {err}") from err


@app.command()
def run(
    suite: Annotated[str, typer.Option(help="Embedded suite name or path to a suite YAML.")] = "micro",
    method: Annotated[Optional[list[str]], typer.Option(help="Method(s) to run; default: all.")] = None,
    task: Annotated[Optional[list[str]], typer.Option(help="Task(s) to run; default: the suite's.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Use the suite's first N seeds.")] = 1,
    db: Annotated[Optional[str], typer.Option(help="Database URL or SQLite path.")] = None,
    method_file: Annotated[Optional[list[Path]], typer.Option(
        help="A .py file defining MergeMethod subclasses to register (repeatable).")] = None,
    executor: Annotated[Executor, typer.Option(help="Where cells run: here, or as tasks on a Ray cluster.")] = "local",
    address: Annotated[Optional[str], typer.Option(
        help="--executor ray: the cluster's address ('auto', ray://HOST:10001); default: a local Ray instance.")] = None,
    task_cpus: Annotated[float, typer.Option(min=0.0, help="--executor ray: CPUs each task reserves.")] = 1.0,
    task_gpus: Annotated[float, typer.Option(min=0.0, help="--executor ray: GPUs each task reserves.")] = 0.0,
    task_memory_gb: Annotated[Optional[float], typer.Option(
        min=0.0, help="--executor ray: memory (GiB) each task reserves.")] = None,
    task_dir: TaskDirs = None,
) -> None:
    """Run the grid (methods x tasks x seeds), skipping stored cells, then print the results table."""
    from benchmark.storage import check_writable, open_store, resolve_db_url

    url = resolve_db_url(db)
    check_writable(url)  # first: a database that cannot take the results is refused before any work
    use_task_dirs(task_dir)
    from benchmark.hub_access import allow_downloads
    from benchmark.suite import load_suite

    spec = load_suite(suite)
    allow_downloads(spec)  # a suite of hub ids downloads them: said before the HF libraries are imported
    from benchmark.hub_access import check_reachable

    check_reachable(spec, task)  # a model or data set it cannot fetch: one line, before the engine loads
    from benchmark.progress import RichReporter
    from benchmark.results import format_records, open_readonly
    from benchmark.runner import check_names, run_grid

    _load_method_files(method_file)
    _quiet_libraries()
    if seeds > len(spec.seeds):
        raise UserError(f"--seeds {seeds}: suite {spec.name!r} lists only {len(spec.seeds)} seeds {list(spec.seeds)}")
    check_names(spec, method, task)  # before the database is opened: a typo writes nothing
    store = open_store(url)
    try:
        with RichReporter(console) as reporter:
            if executor is Executor.ray:
                from benchmark.ray_executor import RayOptions, run_grid_ray

                options = RayOptions(address=address, cpus_per_task=task_cpus, gpus_per_task=task_gpus,
                                     memory_gb_per_task=task_memory_gb)
                summary = run_grid_ray(spec, store, options, methods=method, tasks=task,
                                       seeds=list(spec.seeds[:seeds]), reporter=reporter, method_files=method_file)
            else:
                summary = run_grid(spec, store, methods=method, tasks=task, seeds=list(spec.seeds[:seeds]),
                                   reporter=reporter)
    finally:
        store.close()
    elsewhere = f", {summary.elsewhere} being computed by another runner" if summary.elsewhere else ""
    console.print(f"computed {summary.computed} cells, {summary.skipped} already stored{elsewhere}; database: {url}")
    reader = open_readonly(url)
    out.print(format_records(reader.records(spec.name), "table"))
    reader.close()
    for label, seed, error in summary.failed:
        console.print(f"[red]failed:[/red] {label} (seed {seed}): {error}")
    if summary.failed:
        raise typer.Exit(1)


class Executor(str, enum.Enum):
    local = "local"
    ray = "ray"


class RebuildCheck(str, enum.Enum):
    experts = "experts"
    all = "all"


@app.command()
def release(
    suite: Annotated[str, typer.Argument(help="Embedded suite name or path to a suite YAML.")] = "micro",
    into: Annotated[Optional[Path], typer.Option(
        "--out", help="Release folder; default: the one shipped in the package.")] = None,
    check: Annotated[Optional[RebuildCheck], typer.Option(
        help="Instead of building: rebuild the experts (on the released base) or everything in an empty "
             "cache and report whether the rebuild reproduces the release bit for bit.")] = None,
) -> None:
    """Build a suite's release: base, every seed's experts and the reference results, with a manifest."""
    import os
    import tempfile

    from benchmark.progress import RichReporter
    from benchmark.release import load_release, release_dir
    from benchmark.release_build import build_release, check_rebuild
    from benchmark.suite import load_suite

    spec = load_suite(suite)
    _quiet_libraries()
    folder = into or release_dir()
    if check is None:
        with RichReporter(console) as reporter:
            manifest = build_release(spec, folder, reporter)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        console.print(f"released {spec.name} into {folder}: base {manifest['base']['fingerprint']}, "
                      f"{len(manifest['experts'])} experts, {manifest['reference']['cells']} reference cells, "
                      f"{size / 2**20:.1f} MiB")
        return
    shipped = load_release(folder)
    if shipped is None:
        raise UserError(f"no release at {folder} (build one with `soupbench release {suite}`)")
    os.environ["SOUPBENCH_RELEASE"] = str(folder)
    with tempfile.TemporaryDirectory(prefix="soupbench-rebuild-") as scratch:
        os.environ["SOUPBENCH_CACHE"] = scratch  # an empty cache: every artifact is rebuilt
        with RichReporter(console) as reporter:
            rows = check_rebuild(spec, shipped, check.value, reporter)
    table = Table("artifact", "released", "rebuilt here", "bit for bit")
    for name, released, rebuilt, same in rows:
        table.add_row(name, released, rebuilt, "yes" if same else "[red]no[/red]")
    out.print(table)
    same = sum(row[3] for row in rows)
    console.print(f"{same} of {len(rows)} artifacts reproduced bit for bit on this machine")


@app.command()
def merge(
    base: Annotated[str, typer.Option(help="Base model folder (or hub id).")],
    adapter: Annotated[list[str], typer.Option(help="PEFT LoRA folder, or NAME=PATH (repeatable, in weight order).")],
    method: Annotated[str, typer.Option(help="Merge method (see `soupbench list methods`).")],
    out: Annotated[Path, typer.Option(help="Output folder (written atomically).")],
    weights: Annotated[Optional[str], typer.Option(help="Per-adapter weights W1,W2,... (the `weights` parameter).")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="Method parameter KEY=VALUE, VALUE as JSON if it parses (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for methods that draw at random (DARE).")] = 0,
    as_adapter: Annotated[bool, typer.Option("--as-adapter", help="Write a PEFT LoRA adapter instead of a full model (low-rank methods only).")] = False,
    ignore_declared_base: Annotated[bool, typer.Option("--ignore-declared-base", help="Accept adapters whose recorded base differs from --base.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    method_file: Annotated[Optional[list[Path]], typer.Option(help="A .py file defining MergeMethod subclasses (repeatable).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Modules merged at once (default: torch's thread count).")] = None,
    in_memory: Annotated[bool, typer.Option("--in-memory", help="Load the base and merge in memory instead of streaming it from its files.")] = False,
) -> None:
    """Merge LoRA adapters into a base model and write it (with tokenizer and card) to --out."""
    from benchmark.merge_tool import merge_to_folder, parse_param, parse_weights

    _load_method_files(method_file)
    params = dict(parse_param(p) for p in param or [])
    if weights is not None:
        if "weights" in params:
            raise UserError("give the weights either with --weights or with --param weights=..., not both")
        params["weights"] = parse_weights(weights)
    card = merge_to_folder(base, adapter, method, out, params, seed=seed, as_adapter=as_adapter,
                           ignore_declared_base=ignore_declared_base, overwrite=overwrite,
                           report=lambda message: console.print(message, highlight=False),
                           threads=threads, stream=not in_memory)
    kind = "a LoRA adapter" if card["output"] == "adapter" else "a model"
    rank = card["output_rank"] if card["output_rank"] is not None else "dense"
    console.print(f"merged {len(card['adapters'])} adapters with {card['method']} into {kind} at {out} "
                  f"(output rank {rank})", soft_wrap=True, highlight=False)


@app.command("list")
def list_(what: Listable, task_dir: TaskDirs = None) -> None:
    """List the registered methods, tasks or suites."""
    use_task_dirs(task_dir)
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

        table = Table("task", "kind", "skills", "primary metric", "origin", "description")
        for name in TASKS:
            info = TASKS.get(name)
            table.add_row(name, info.kind, ", ".join(info.skills), info.primary_metric, info.origin, info.description)
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
    suite: Annotated[Optional[list[str]], typer.Option(
        help="Suite name or YAML path; repeat it for builds of one suite on other bases (base seeds): "
             "the bar must hold on each, and the ranking is compared across them.")] = None,
    task_dir: TaskDirs = None,
) -> None:
    """The suite's validity figures per task; exits 0 only when the suite meets its bar."""
    use_task_dirs(task_dir)
    from benchmark.results import open_readonly
    from benchmark.storage import resolve_db_url
    from benchmark.suite import load_suite
    from benchmark.taskinfo import TASKS
    from benchmark.validity import Bar, agreement_across_bases, assess

    specs = [load_suite(name) for name in suite or ["micro"]]
    try:
        reader = open_readonly(resolve_db_url(db))
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    by_build: dict[str, dict] = {}
    for spec in specs:
        primary = by_build.setdefault(spec.name, {})
        for run_row in reader.runs(suite=spec.name, status="ok"):
            for score in run_row.scores:
                if score.primary:
                    primary[(run_row.method, run_row.task, run_row.seed)] = score.value
    reader.close()
    empty = [name for name, primary in by_build.items() if not primary]
    if empty:
        raise UserError(f"no stored runs for suite {', '.join(map(repr, empty))}; run `soupbench run --suite ...` first")
    ok = True
    for spec in specs:
        report = assess(by_build[spec.name], [TASKS.get(t) for t in spec.tasks])
        for tv in report:
            title = f"{tv.task} ({tv.kind})" + (f", {spec.name}" if len(specs) > 1 else "")
            table = Table(title=title, show_header=True)
            table.add_column("figure")
            table.add_column("value", justify="right")
            for name, value in tv.figures.items():
                table.add_row(name, "n/a" if value is None else f"{value:.3f}")
            for check in tv.checks:
                mark = "[green]pass[/green]" if check.ok else "[red]FAIL[/red]"
                table.add_row(f"{mark} {check.what} ({check.needed})", "n/a" if check.value is None else f"{check.value:.3f}")
            out.print(table)
        ok = ok and all(tv.ok for tv in report)
    if len(specs) > 1:
        bar = Bar()
        table = Table(title="ranking across base builds (Kendall tau of the means over seeds)", show_header=True)
        table.add_column("task")
        table.add_column("builds")
        table.add_column("tau", justify="right")
        for task in [t for t in specs[0].tasks if TASKS.get(t).kind == "composite"]:
            tau, pairs = agreement_across_bases(by_build, task)
            for (a, b), value in pairs.items():
                table.add_row(task, f"{a} / {b}", f"{value:.3f}")
            passed = tau is not None and tau >= bar.min_tau
            mark = "[green]pass[/green]" if passed else "[red]FAIL[/red]"
            table.add_row(task, f"{mark} mean (>= {bar.min_tau:.2f})", "n/a" if tau is None else f"{tau:.3f}")
            ok = ok and passed
        out.print(table)
    what = "the suite meets its bar" + (f" on all {len(specs)} builds" if len(specs) > 1 else "")
    out.print(f"[green]{what}[/green]" if ok else f"[red]{what.replace('meets', 'does not meet')}[/red]")
    raise typer.Exit(0 if ok else 1)


@app.command()
def leaderboard(
    db: Annotated[Optional[str], typer.Option(help="Database URL or SQLite path.")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve the site on.")] = 8501,
    reference: Annotated[bool, typer.Option(
        "--reference/--no-reference",
        help="Show the release's reference results beside the database's runs (alone when there is no database).")] = True,
    task_dir: TaskDirs = None,
) -> None:
    """Start the leaderboard site (Streamlit) over the results database, opened read-only.

    Without a database of your own (no --db, no SOUPBENCH_DB, no ./soupbench.db) it shows the
    release's reference results; with one, your runs beside them.
    """
    import os

    use_task_dirs(task_dir)  # the task pages read the tasks' metadata in this process
    from benchmark.release import reference_db_url
    from benchmark.results import open_readonly
    from benchmark.storage import DB_ENV_VAR, DEFAULT_DB_FILE, resolve_db_url

    own = db is not None or bool(os.environ.get(DB_ENV_VAR)) or Path(DEFAULT_DB_FILE).is_file()
    url = resolve_db_url(db)
    try:  # fail here, in the terminal, rather than on a web page nobody has opened yet; and
        # before the reference results are unpacked into the cache: a bad --db writes nothing
        if own or not reference:
            open_readonly(url).close()
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    except Exception as err:  # a server that is down, a driver that is not installed
        _fail(f"cannot read {url}: {type(err).__name__}: {err}")
    reference_url = reference_db_url(log=console.print) if reference else None
    if reference_url is None and not own:
        _fail(f"no database at {url} and no released reference results to show")
    from leaderboard.serve import serve

    source = None
    if not own and reference_url is not None:
        source = "Showing the release's reference results (no database of your own yet)."
        console.print("no database of your own: showing the release's reference results")
        url = reference_url
    elif reference_url is not None:
        from leaderboard.combine import combined_database

        shown = url
        url, added = combined_database(reference_url, shown)
        source = f"The release's reference results, with {added} runs of your own beside them."
        console.print(f"{added} runs of {shown} beside the release's reference results (a snapshot: restart "
                      "the site to see runs stored since; --no-reference shows your database alone)")
    console.print(f"leaderboard at http://localhost:{port}")
    serve(url, port, source)


from benchmark.cli_db import db_app  # noqa: E402  (a sub-command group of its own module)
from benchmark.cli_submit import register as _register_submission  # noqa: E402

app.add_typer(db_app, name="db")
_register_submission(app, console, out, _quiet_libraries)

if __name__ == "__main__":
    app()
