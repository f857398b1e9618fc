"""Turning a `--db` value into a working engine, or into one clear `UserError` naming it.

A grid can run for hours, so a database that cannot hold its results must be refused before any
work, and refusing it must leave nothing behind: no created folder, no empty file, no tables added
to somebody else's SQLite file, no switch of its journal to WAL. Everything that can be checked
without writing is checked here, in this order: the URL parses, SQLAlchemy knows its kind, its
driver imports, a SQLite target is a file (not memory, not a folder, not text) in a folder that
exists and can be written, and the server (or file) answers a first query. What the database
holds (SoupBench's schema, another program's tables, a newer schema) is `benchmark.schema`'s
question, asked next over the engine this module returns.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from benchmark.errors import UserError

SQLITE_MAGIC = b"SQLite format 3\x00"
# Parallel runners share one SQLite file: wait this long for its write lock rather than fail at once.
SQLITE_BUSY_SECONDS = 30
# A server that does not answer within this is reported as down, not waited on for minutes.
CONNECT_TIMEOUT_SECONDS = 10
_URL_EXAMPLES = "a file path, sqlite:///PATH, or postgresql://USER@HOST/DATABASE"


def shown(url: str | URL) -> str:
    """The database as messages name it: a SQLite file by its path, a server URL as given but
    with its password hidden."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError:
        return str(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:"):
        return str(Path(database).expanduser().resolve())
    if parsed.password is None and isinstance(url, str):
        return url
    return parsed.render_as_string(hide_password=True)


def parse(url: str) -> URL:
    """The URL with a dialect SQLAlchemy knows and a driver that imports.

    Plain `postgresql://` means psycopg2 to SQLAlchemy 2.0 (psycopg 3 from 2.1 on); SoupBench's
    extra installs psycopg (3), so when psycopg2 is missing and psycopg is there the URL is read
    as `postgresql+psycopg://`: what the user meant.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"database URL {url!r} cannot be parsed: give {_URL_EXAMPLES}") from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise UserError(f"database URL {shown(url)}: SQLAlchemy knows no database kind "
                        f"{parsed.drivername!r}; give {_URL_EXAMPLES}") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is not None:
            return parsed.set(drivername="postgresql+psycopg")
        hint = ("pip install 'soupbench[postgresql]' (psycopg) and use postgresql:// or postgresql+psycopg://"
                if parsed.get_backend_name() == "postgresql" else "install the Python driver it names")
        raise UserError(f"database URL {shown(url)}: its driver is not installed ({err}); {hint}") from None
    return parsed


def sqlite_path(url: URL, raw: str) -> Path:
    """The file behind a SQLite URL; in-memory and URI-style databases are refused.

    An in-memory database vanishes with the connection that made it: a run would compute the whole
    grid and then find nothing to print, a reader would see an empty database.
    """
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in database or url.query.get("mode") == "memory":
        raise UserError(f"database URL {raw!r} is an in-memory SQLite database: its results would "
                        "vanish when the command ends; give a file path, e.g. --db soupbench.db")
    if database.startswith("file:") or url.query.get("uri"):
        raise UserError(f"database URL {raw!r}: SQLite URI file names are not supported; give the "
                        "file's path, e.g. sqlite:////abs/path/results.db")
    return Path(database).expanduser().resolve()


def check_sqlite_file(path: Path, writing: bool) -> bool:
    """Refuse what cannot be a SQLite database (for writing: one SoupBench may write); True if
    the file exists. Reads at most 16 bytes; writes nothing."""
    if path.is_dir():
        raise UserError(f"database {path} is a directory, not a SQLite file; give a file path inside it")
    folder = path.parent
    if not path.exists():
        if not folder.is_dir():
            raise UserError(f"database {path}: folder {folder} does not exist (SoupBench does not create "
                            "folders for a database; create it or give another path)")
        if writing and not os.access(folder, os.W_OK | os.X_OK):
            raise UserError(f"database {path}: folder {folder} is not writable, so the file cannot be created")
        return False
    if not path.is_file():
        raise UserError(f"database {path} is not a regular file")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as err:
        raise UserError(f"database {path} cannot be read: {err.strerror or err}") from None
    if header and header != SQLITE_MAGIC:  # an empty file is an empty database to SQLite
        raise UserError(f"database {path} is not a SQLite database (it begins with {header[:12]!r})")
    if writing and not os.access(path, os.W_OK):
        raise UserError(f"database {path} is read-only")
    if writing and not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"database {path}: its folder {folder} is not writable (SQLite writes its journal "
                        "beside the file)")
    return True


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLite leaves foreign keys off unless asked, and the cascade from runs to scores and samples
    # depends on them. (WAL is set once, by benchmark.schema, after the file is known to be ours.)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _engine(url: URL, readonly: bool) -> Engine:
    backend = url.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if backend == "postgresql":
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        if readonly:
            options["postgresql_readonly"] = True
    return create_engine(url, connect_args=connect_args, execution_options=options)


def _first_query(engine: Engine, what: str) -> None:
    """Connect once now, so that a server that is down or a file SQLite cannot read is reported
    here, as one line, rather than as a traceback from the first real query. (On SQLite, reading
    the table list is what finds a damaged file: `SELECT 1` alone reads no page.)"""
    query = "SELECT count(*) FROM sqlite_master" if engine.dialect.name == "sqlite" else "SELECT 1"
    try:
        with engine.connect() as connection:
            connection.execute(text(query))
    except DBAPIError as err:
        engine.dispose()
        reason = str(err.orig).strip().splitlines()[0] if err.orig is not None else str(err)
        raise UserError(f"cannot open database {what}: {reason}") from None


def open_engine(url: str, readonly: bool) -> Engine:
    """An engine over `url` that has answered a first query; a `UserError` for anything else.

    For reading, a SQLite file must exist and is opened through a `mode=ro` URI, so SQLite itself
    refuses writes; for writing, a missing file is created by the first write, not here.
    """
    parsed = parse(url)
    if parsed.get_backend_name() != "sqlite":
        engine = _engine(parsed, readonly)
        _first_query(engine, shown(url))
        return engine
    path = sqlite_path(parsed, url)
    exists = check_sqlite_file(path, writing=not readonly)
    if readonly:
        if not exists:
            raise UserError(f"no results database at {path}: run `soupbench run` first, or point --db / "
                            "SOUPBENCH_DB at an existing database")
        # Percent-encode the path: in a SQLite URI, "?" and "#" would end the file name.
        parsed = URL.create("sqlite", database=f"file:{quote(str(path))}", query={"mode": "ro", "uri": "true"})
    else:
        parsed = parsed.set(database=str(path))
    engine = _engine(parsed, readonly)
    if exists:  # a missing file would be created by connecting; it is created by the first write
        _first_query(engine, str(path))
    return engine
