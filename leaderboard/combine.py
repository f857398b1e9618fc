"""The release's reference results beside a user's own runs, as one database the site reads.

The site reads one database (one reader, run ids that a page can follow to its samples). To show
a user's runs next to the released reference results, both are copied into one SQLite file in a
temporary folder: the reference as it is, then every run of the user's database whose cell
(suite, method, parameters, task, seed) the reference lacks, with new ids. Rows of the same cell
come from the reference: it is the row every other user sees. The copy is a snapshot taken when
the site starts; restart it to see runs stored since.

Where the user's database has submissions (schema 0003), the added runs keep where they came from:
their submissions (new ids), the links to them and their hidden-set scores come along, and the
tables are made in the copy when the reference (made before 0003, as the micro release's is) lacks
them. A database without those tables adds none, and the copy stays as the reference was.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, insert, make_url, select

from benchmark.results import open_readonly
from benchmark.storage import Base, HiddenScore, Run, Sample, Score, Submission, SubmissionRun, has_submission_tables

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
            _copy_rows(source, sink, table, new_ids)
        if new_ids and has_submission_tables(source):
            _append_submissions(source, sink, new_ids)
    return len(new_ids)


def _copy_rows(source: Connection, sink: Connection, table, new_ids: dict[int, int]) -> None:
    """The rows of `table` that belong to the added runs, their `run_id` mapped to the new ids."""
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


def _append_submissions(source: Connection, sink: Connection, new_ids: dict[int, int]) -> None:
    """The submissions of the added runs (each once, with a new id), their links, and their
    hidden-set scores; the tables are made first where the reference lacks them."""
    tables = [Submission.__table__, SubmissionRun.__table__, HiddenScore.__table__]
    Base.metadata.create_all(sink, tables=tables, checkfirst=True)
    links = source.execute(select(SubmissionRun.submission_id, SubmissionRun.run_id)
                           .where(SubmissionRun.run_id.in_(list(new_ids)))).all()
    submission_columns = [c for c in Submission.__table__.columns if c.name != "id"]
    new_submissions: dict[int, int] = {}
    for row in source.execute(select(Submission.__table__).where(
            Submission.id.in_({link.submission_id for link in links}))):
        values = {c.name: getattr(row, c.name) for c in submission_columns}
        new_submissions[row.id] = sink.execute(insert(Submission.__table__).values(**values)).inserted_primary_key[0]
    if links:
        sink.execute(insert(SubmissionRun.__table__), [
            {"submission_id": new_submissions[link.submission_id], "run_id": new_ids[link.run_id]} for link in links])
    _copy_rows(source, sink, HiddenScore.__table__, new_ids)
