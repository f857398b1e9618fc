"""`soupbench db ...`: what schema a results database holds, and upgrading an older one.

Kept apart from `benchmark.cli` (which registers it) because it needs none of the runner: it
imports only storage, and answers in a second. Bad input raises `UserError`, which the `soupbench`
group prints as one line (benchmark.cli.OneLineErrors).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

db_app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
out = Console()
DbOption = Annotated[Optional[str], typer.Option(help="Database URL or SQLite path.")]


@db_app.command()
def status(db: DbOption = None) -> None:
    """The database's schema revision and this SoupBench's; exits 1 when it needs `db upgrade`."""
    from benchmark.database import open_engine, shown
    from benchmark.schema_version import inspect_schema
    from benchmark.storage import resolve_db_url

    url = resolve_db_url(db)
    engine = open_engine(url, readonly=True)
    with engine.connect() as connection:
        state = inspect_schema(connection)
    engine.dispose()
    advice = {"empty": "no SoupBench tables (`soupbench run` creates them)",
              "foreign": "not a SoupBench database",
              "older": f"older than this SoupBench's {state.head}: `soupbench db upgrade --db {shown(url)}`",
              "current": "current",
              "newer": f"newer than this SoupBench's {state.head}: upgrade SoupBench"}[state.state]
    out.print(f"{shown(url)}: {state.describe()}; {advice}", soft_wrap=True, highlight=False)
    if state.state != "current":
        raise typer.Exit(1)


@db_app.command()
def upgrade(db: DbOption = None) -> None:
    """Upgrade a database made by an older SoupBench to this one's schema, in one transaction."""
    from benchmark import schema_version
    from benchmark.database import open_engine, shown
    from benchmark.storage import resolve_db_url

    url = resolve_db_url(db)
    open_engine(url, readonly=True).dispose()  # it exists and is readable: an upgrade never creates one
    engine = open_engine(url, readonly=False)
    try:
        before, now = schema_version.upgrade(engine, shown(url))
    finally:
        engine.dispose()
    if before.state == "current":
        out.print(f"{shown(url)} is already at schema revision {now}: nothing to do", soft_wrap=True,
                  highlight=False)
    else:
        out.print(f"upgraded {shown(url)} from {before.describe()} to schema revision {now}",
                  soft_wrap=True, highlight=False)
