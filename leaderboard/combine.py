"""The release's reference results beside a user's own runs, as one database the site reads.

The site reads one database (one reader, run ids that a page can follow to its samples). To show
a user's runs next to the released reference results, both are copied into one SQLite file in a
temporary folder: the reference as it is, then every run of the user's database whose cell
(suite, method, parameters, task, seed) the reference lacks, with new ids. Rows of the same cell
come from the reference: it is the row every other user sees. The copy is a snapshot taken when
the site starts; restart it to see runs stored since.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sqlalchemy import Engine, create_engine, insert, make_url, select

from benchmark.results import open_readonly
from benchmark.storage import Run, Sample, Score

_CHUNK = 2_000


def combined_database(reference_url: str, user_url: str, folder: Path | None = None) -> tuple[str, int]:
    """A SQLite URL holding the reference results and the user's runs it lacks; and how many runs
    of the user's were added. `reference_url` must be a SQLite file (a release's reference.db)."""
    folder = folder or Path(tempfile.mkdtemp(prefix="soupbench-board-"))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "combined.db"
    open_readonly(reference_url).close()  # a readable SoupBench database, or a clear error
    shutil.copyfile(str(make_url(reference_url).database), target)
    engine = create_engine(f"sqlite:///{target}")
    user = open_readonly(user_url)
    try:
        added = _append_missing_cells(user.engine, engine)
    finally:
        user.close()
        engine.dispose()
    return f"sqlite:///{target}", added


def _cell(row) -> tuple:
    return (row.suite, row.method, row.params_key, row.task, row.seed)


def _append_missing_cells(user: Engine, target: Engine) -> int:
    run_columns = [c for c in Run.__table__.columns if c.name != "id"]
    with target.connect() as connection:
        known = {_cell(row) for row in connection.execute(
            select(Run.suite, Run.method, Run.params_key, Run.task, Run.seed))}
    new_ids: dict[int, int] = {}
    with user.connect() as source, target.begin() as sink:
        for row in source.execute(select(Run.__table__)):
            if _cell(row) in known:
                continue
            values = {c.name: getattr(row, c.name) for c in run_columns}
            new_ids[row.id] = sink.execute(insert(Run.__table__).values(**values)).inserted_primary_key[0]
        for table in (Score.__table__, Sample.__table__):
            columns = [c for c in table.columns if c.name != "id"]
            batch = []
            for row in source.execute(select(table).where(table.c.run_id.in_(list(new_ids)))):
                batch.append({c.name: new_ids[row.run_id] if c.name == "run_id" else getattr(row, c.name)
                              for c in columns})
                if len(batch) >= _CHUNK:
                    sink.execute(insert(table), batch)
                    batch = []
            if batch:
                sink.execute(insert(table), batch)
    return len(new_ids)
