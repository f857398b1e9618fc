"""Which schema a database holds, and bringing it to this code's: Alembic revisions, recorded in it.

A database is in one of these states (`inspect_schema`):

- `empty`: none of SoupBench's tables. A writer builds the schema by running every migration, the
  same scripts that upgrade an old database, so a fresh database and an upgraded one cannot drift.
- `foreign`: a SQLite file that holds other tables and none of SoupBench's: somebody else's file,
  refused and left exactly as it was. (A PostgreSQL database may hold other tables: a server's
  database is commonly shared, and created for SoupBench by whoever runs the server.)
- `older`: a revision this code knows, before its head; or SoupBench's tables without a version
  table, which is what SoupBench 0.1.0 made before versions existed and counts as the baseline.
  Upgraded on request (`soupbench db upgrade`), never behind the user's back: once upgraded, the
  older SoupBench that made it refuses it.
- `current`: at this code's head revision.
- `newer`: a revision this code does not know, so made by a newer SoupBench: refused.

Writers need `current` (or `empty`); readers accept `older` too, since every revision so far keeps
the tables and columns they read. Migrations run in one transaction under a lock (SQLite's write
lock, a PostgreSQL advisory lock), so two runners opening a new database at once build it once, and
an upgrade that fails half way leaves the database as it was.

Adding a revision: copy the newest file of `benchmark/migrations/versions/`, give it the next
number and `down_revision` = the previous head, write its `upgrade()` (on SQLite, alter a table
with `op.batch_alter_table`), and change the ORM in `benchmark/storage.py` to match;
`tests/test_schema_version.py` checks that the migrations build exactly the ORM's schema.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError

from benchmark.errors import UserError

VERSION_TABLE = "soupbench_schema_version"
SCRIPTS = "benchmark:migrations"
BASELINE = "0001_baseline"
BASELINE_TABLES = ("runs", "scores", "samples")
# Any constant works; it only has to be the same in every SoupBench process on one server.
_PG_LOCK_KEY = 0x50_0B_BE_AC

State = Literal["empty", "foreign", "older", "current", "newer"]


@dataclass(frozen=True)
class SchemaState:
    state: State
    revision: str | None  # None: no version recorded (empty, foreign, or made before versions)
    head: str
    tables: tuple[str, ...]

    def describe(self) -> str:
        if self.revision is not None:
            return f"schema revision {self.revision}"
        if self.state == "older":
            return f"the schema of SoupBench 0.1.0, made before schema versions (revision {BASELINE})"
        return "no SoupBench schema"


@functools.lru_cache(maxsize=None)
def _scripts(location: str) -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", location)
    return ScriptDirectory.from_config(config)


def head_revision(location: str = SCRIPTS) -> str:
    return _scripts(location).get_current_head() or BASELINE


def inspect_schema(connection: Connection, location: str = SCRIPTS) -> SchemaState:
    """What `connection`'s database holds; reads only."""
    head = head_revision(location)
    tables = tuple(sorted(inspect(connection).get_table_names()))
    if VERSION_TABLE in tables:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        heads = context.get_current_heads()
        revision = heads[0] if heads else None
        if revision is None:
            state: State = "older" if "runs" in tables else "empty"
        elif revision == head:
            state = "current"
        elif revision in {script.revision for script in _scripts(location).walk_revisions()}:
            state = "older"
        else:
            state = "newer"
        return SchemaState(state, revision, head, tables)
    ours = [t for t in BASELINE_TABLES if t in tables]
    if not ours:
        foreign = bool(tables) and connection.dialect.name == "sqlite"
        return SchemaState("foreign" if foreign else "empty", None, head, tables)
    return SchemaState("older", None, head, tables)


def refuse(state: SchemaState, what: str, writing: bool) -> None:
    """Raise the one-line UserError for a state a writer (or, `writing=False`, a reader) cannot use."""
    from benchmark import __version__

    if state.state == "foreign":
        shown = ", ".join(state.tables[:6]) + (", ..." if len(state.tables) > 6 else "")
        raise UserError(f"database {what} holds other tables ({shown}) and no SoupBench schema: it is not a "
                        "SoupBench database, and SoupBench leaves it untouched; give another --db")
    if state.state == "newer":
        raise UserError(f"database {what} has schema revision {state.revision}, which this SoupBench "
                        f"({__version__}, schema {state.head}) does not know: a newer SoupBench made it. "
                        "Upgrade SoupBench to use it; nothing was changed")
    missing = [t for t in BASELINE_TABLES if t not in state.tables]
    if state.state == "older" and state.revision is None and missing:
        raise UserError(f"database {what} holds some of SoupBench's tables but not {', '.join(missing)}: "
                        "it is damaged or not SoupBench's; give another --db")
    if writing and state.state == "older":
        raise UserError(f"database {what} has {state.describe()}; this SoupBench writes schema "
                        f"{state.head}. Upgrade it with `soupbench db upgrade --db {what}` (SoupBench "
                        "versions older than this one cannot write it afterwards)")


@contextmanager
def _migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's migration lock; committed at the end
    of the block, rolled back if it raises.

    On SQLite, `BEGIN IMMEDIATE` takes the write lock before anything is read, so a second runner
    waits (busy timeout) and then sees the finished schema. Foreign keys are switched off for the
    migration (SQLite ignores the switch inside a transaction, hence before it): a batch ALTER
    rebuilds a table by copy, drop and rename, and the drop of `runs` would otherwise cascade to
    every score and sample. `PRAGMA foreign_key_check` then proves that nothing was left dangling.
    """
    sqlite = engine.dialect.name == "sqlite"
    connection = engine.connect()
    try:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield connection
        if sqlite:
            dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if dangling:
                raise RuntimeError(f"a migration left rows pointing at nothing: {dangling[:5]}")
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.close()


def _migrate(connection: Connection, state: SchemaState, target: str, location: str) -> None:
    config = Config()
    config.set_main_option("script_location", location)
    config.attributes["connection"] = connection
    if state.revision is None and state.state == "older":
        command.stamp(config, BASELINE)
    command.upgrade(config, target)


def _use_wal(engine: Engine) -> None:
    # WAL lets the leaderboard read while a runner writes; it is a property of the file, set once
    # the file is known to be SoupBench's. A reader holding the file open can make the switch fail:
    # the database then works as it is, only with less concurrency.
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    except OperationalError:
        pass


def prepare_for_writing(engine: Engine, what: str, location: str = SCRIPTS) -> SchemaState:
    """Build the schema in an empty database; accept a current one; refuse every other state."""
    with _migration_transaction(engine) as connection:
        state = inspect_schema(connection, location)
        refuse(state, what, writing=True)
        if state.state == "empty":
            _migrate(connection, state, "head", location)
    if engine.dialect.name == "sqlite":
        _use_wal(engine)
    return state


def check_readable(engine: Engine, what: str, location: str = SCRIPTS) -> SchemaState:
    """Refuse what a reader cannot read: no SoupBench schema, a foreign file, a newer schema."""
    with engine.connect() as connection:
        state = inspect_schema(connection, location)
    refuse(state, what, writing=False)
    if state.state == "empty":
        raise UserError(f"database {what} holds no SoupBench runs table")
    return state


def upgrade(engine: Engine, what: str, target: str = "head",
            location: str = SCRIPTS) -> tuple[SchemaState, str]:
    """Bring an older SoupBench database to `target` (this code's head) in one transaction; return
    the state it was in and the revision it is at now. A current database is left as it is."""
    with _migration_transaction(engine) as connection:
        state = inspect_schema(connection, location)
        if state.state == "empty":
            raise UserError(f"database {what} holds no SoupBench tables: nothing to upgrade (`soupbench run` "
                            "creates them)")
        refuse(state, what, writing=False)
        if state.state == "older":
            _migrate(connection, state, target, location)
        now = inspect_schema(connection, location)
    if engine.dialect.name == "sqlite":
        _use_wal(engine)
    return state, now.revision or BASELINE
