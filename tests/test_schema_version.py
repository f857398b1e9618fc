"""Schema revisions: a new database is built by the migrations, an old one is upgraded on request
and keeps every row, a newer one is refused; on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text
from typer.testing import CliRunner

from benchmark import schema_version
from benchmark.cli import app
from benchmark.database import open_engine
from benchmark.errors import UserError
from benchmark.results import open_readonly
from benchmark.schema_version import BASELINE, VERSION_TABLE, head_revision, inspect_schema
from benchmark.storage import Base, Run, Sample, Score, open_store, params_key
from tests.test_storage import make_run

GOLDEN = Path(__file__).parent / "data" / "soupbench-0.1.0-unversioned.sql"
REPO = Path(__file__).resolve().parent.parent
cli = CliRunner()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def schema_drift(url: str) -> list:
    """What differs between the database's tables and the ORM's (empty: the same schema)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    return [d for d in diff if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]


def revision_of(url: str) -> str | None:
    engine = open_engine(url, readonly=True)
    try:
        with engine.connect() as connection:
            return inspect_schema(connection).revision
    finally:
        engine.dispose()


def make_old_database(url: str) -> None:
    """A database as SoupBench 0.1.0 left it: its three tables, no version table, one run.

    On SQLite it is the dump of a file that 0.1.0's own code wrote (tests/data); on PostgreSQL it is
    what 0.1.0's open_store did (create_all of the ORM's tables), with a row of the dump's run."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.executescript(GOLDEN.read_text())
        return
    tables = [Base.metadata.tables[name] for name in ("runs", "scores", "samples")]
    dump = create_engine("sqlite://")  # the dump read back through the ORM's types, then copied over
    with dump.connect() as connection:
        connection.connection.driver_connection.executescript(GOLDEN.read_text())
        rows = {t.name: connection.execute(select(t)).mappings().all() for t in tables}
    dump.dispose()
    engine = create_engine(url)
    Base.metadata.create_all(engine, tables=tables)
    with engine.begin() as connection:
        for table in tables:
            connection.execute(table.insert(), [dict(row) for row in rows[table.name]])
            # as a restored dump does: the id sequence continues after the copied ids
            connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                    f"(SELECT max(id) FROM {table.name}))"))
    engine.dispose()


def counts(url: str) -> tuple[int, int, int]:
    engine = create_engine(url)
    with engine.connect() as connection:
        found = tuple(connection.scalar(select(func.count()).select_from(t)) for t in (Run, Score, Sample))
    engine.dispose()
    return found  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- new database


def test_a_new_database_is_built_by_the_migrations_to_exactly_the_orm_schema(any_db_url: str) -> None:
    open_store(any_db_url).close()
    assert revision_of(any_db_url) == head_revision() != BASELINE
    assert schema_drift(any_db_url) == []


def test_runners_creating_one_new_database_at_once_build_it_once(any_db_url: str) -> None:
    # Real processes, released together once all have imported: without the migration lock they
    # race on CREATE TABLE and all but one fail.
    code = ("import sys; from benchmark.storage import open_store\n"
            "print('ready', flush=True); sys.stdin.readline()\n"
            "open_store(sys.argv[1]).close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, any_db_url], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    for proc in procs:
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    engine = create_engine(any_db_url)
    with engine.connect() as connection:
        versions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    engine.dispose()
    assert versions == [head_revision()]
    assert schema_drift(any_db_url) == []


# ---------------------------------------------------------------------------------- old database


def _old_database_url(any_db_url: str) -> str:
    make_old_database(any_db_url)
    assert counts(any_db_url) == (1, 1, 1)
    return any_db_url


def test_a_database_of_soupbench_0_1_0_is_readable_but_refused_for_writing(any_db_url: str) -> None:
    url = _old_database_url(any_db_url)
    before = digest(Path(url.removeprefix("sqlite:///"))) if url.startswith("sqlite") else None
    reader = open_readonly(url)
    assert [(r.method, r.task, r.mean) for r in reader.records() if r.primary] == [("ties", "math_code", 0.25)]
    reader.close()
    with pytest.raises(UserError, match=r"SoupBench 0\.1\.0.*soupbench db upgrade --db"):
        open_store(url)
    assert revision_of(url) is None and counts(url) == (1, 1, 1)
    if before is not None:
        assert digest(Path(url.removeprefix("sqlite:///"))) == before


def test_db_upgrade_brings_an_old_database_to_head_keeping_every_row(any_db_url: str) -> None:
    url = _old_database_url(any_db_url)
    result = cli.invoke(app, ["db", "status", "--db", url])
    assert result.exit_code == 1 and "soupbench db upgrade" in result.output, result.output
    result = cli.invoke(app, ["db", "upgrade", "--db", url])
    assert result.exit_code == 0, result.output
    assert f"to schema revision {head_revision()}" in result.output
    assert revision_of(url) == head_revision()
    assert schema_drift(url) == []
    assert counts(url) == (1, 1, 1)  # the cascade from runs did not fire during the migration
    with open_store(url) as store:  # the upgraded database takes new runs and knows its old cell
        assert store.completed_cells("micro", "ties", params_key({"density": 0.2}), 0) == {"math_code"}
        store.save_runs([make_run(task="math")])
        assert store.count_runs() == 2
    again = cli.invoke(app, ["db", "upgrade", "--db", url])
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert cli.invoke(app, ["db", "status", "--db", url]).exit_code == 0


def test_db_upgrade_creates_nothing_where_there_is_no_database(tmp_path: Path) -> None:
    result = cli.invoke(app, ["db", "upgrade", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 2 and result.output.startswith("error: no results database at")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- newer database


def _set_revision(url: str, revision: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_a_database_of_a_newer_soupbench_is_refused_and_left_as_it_is(any_db_url: str) -> None:
    with open_store(any_db_url) as store:
        store.save_runs([make_run()])
    _set_revision(any_db_url, "0099_from_the_future")
    path = Path(any_db_url.removeprefix("sqlite:///")) if any_db_url.startswith("sqlite") else None
    before = digest(path) if path else None
    for opener in (open_store, open_readonly):
        with pytest.raises(UserError, match="revision 0099_from_the_future.*a newer SoupBench made it"):
            opener(any_db_url)
    for args in (["run", "--db", any_db_url], ["results", "--db", any_db_url], ["db", "upgrade", "--db", any_db_url]):
        result = cli.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.count("\n") == 1 and "a newer SoupBench made it" in result.output
    assert revision_of(any_db_url) == "0099_from_the_future" and counts(any_db_url)[0] == 1
    if path is not None:
        assert digest(path) == before


# ---------------------------------------------------------- the path a future revision will take


THROWAWAY = '''"""A test's next revision: a column on runs, filled from the rows already there."""
import sqlalchemy as sa
from alembic import op

revision = "0099_throwaway"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # on SQLite, a rebuild of the table: what an ALTER it cannot do in place (a type, a constraint) takes
    rebuild = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("runs", recreate=rebuild) as batch:
        batch.add_column(sa.Column("note", sa.String(50), nullable=False, server_default="none"))
    op.execute("UPDATE runs SET note = method || ':' || task")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("note")
'''


def test_an_upgrade_through_a_further_revision_alters_a_table_and_keeps_every_row(
        any_db_url: str, tmp_path: Path) -> None:
    # What the next real revision will do: rebuild `runs` (SQLite's batch ALTER copies, drops and
    # renames it), which with foreign keys on would cascade to every score and sample.
    scripts = tmp_path / "migrations"
    shutil.copytree(REPO / "benchmark" / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0099_throwaway.py").write_text(THROWAWAY.format(head=head_revision()))
    with open_store(any_db_url) as store:
        store.save_runs([make_run(task="math"), make_run(task="code")])
    assert counts(any_db_url) == (2, 4, 4)
    engine = open_engine(any_db_url, readonly=False)
    before, now = schema_version.upgrade(engine, "test db", location=str(scripts))
    engine.dispose()
    assert (before.state, before.revision, now) == ("older", head_revision(), "0099_throwaway")
    assert counts(any_db_url) == (2, 4, 4)
    engine = create_engine(any_db_url)
    with engine.connect() as connection:
        notes = connection.execute(text("SELECT note FROM runs ORDER BY task")).scalars().all()
        if engine.dialect.name == "sqlite":
            assert connection.exec_driver_sql("PRAGMA foreign_key_list(scores)").fetchall()  # still enforced
    engine.dispose()
    assert notes == ["ties:code", "ties:math"]
    # To this code (which has no 0099) the upgraded database is now one of a newer SoupBench.
    with pytest.raises(UserError, match="a newer SoupBench made it"):
        open_store(any_db_url)
