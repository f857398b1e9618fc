"""Every bad `--db` gives one line naming it, exit code 2 and nothing written, before any work.

The cases are those a probe of SoupBench 0.1.0 ended in tracebacks (or, for an unrelated SQLite
file, in SoupBench's tables added to it and its journal switched to WAL; for in-memory SQLite, in
a grid computed and then lost).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.results import open_readonly
from benchmark.storage import open_store

REPO = Path(__file__).resolve().parent.parent
cli = CliRunner()
COMMANDS = [["run"], ["results"], ["validate"], ["leaderboard", "--port", "8599"]]


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with its content's hash: what "nothing written" compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        connection.execute("INSERT INTO notes (body) VALUES ('mine')")
    connection.close()


def damaged_sqlite(path: Path) -> None:
    foreign_sqlite(path)
    data = bytearray(path.read_bytes())
    data[100:] = random.Random(1).randbytes(len(data) - 100)
    path.write_bytes(bytes(data))


def text_file(path: Path) -> None:
    path.write_text("these are my notes\n")


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def folder(path: Path) -> None:
    path.mkdir()


# (id, what to put at tmp/"target" before the run, the --db value, what the one line must say)
CASES: list[tuple[str, Callable[[Path], None] | None, Callable[[Path], str], str]] = [
    ("unknown-scheme", None, lambda t: "garbage://x/y", "SQLAlchemy knows no database kind 'garbage'"),
    ("unparsable", None, lambda t: "://nonsense", "'://nonsense' cannot be parsed"),
    ("missing-folder", None, lambda t: str(t / "missing" / "r.db"), "/missing does not exist"),
    ("text-file", text_file, lambda t: str(t), "target is not a SQLite database"),
    ("random-bytes", random_bytes, lambda t: str(t), "target is not a SQLite database"),
    ("damaged-sqlite", damaged_sqlite, lambda t: str(t), "cannot open database"),
    ("directory", folder, lambda t: str(t), "target is a directory"),
    ("driver-missing", None, lambda t: "postgresql+psycopg2://me@localhost/results", "driver is not installed"),
    ("server-down-socket", folder, lambda t: f"postgresql+psycopg://me@/results?host={t}", "cannot open database"),
    ("server-down-tcp", None, lambda t: "postgresql+psycopg://me@127.0.0.1:9/results", "cannot open database"),
    ("in-memory", None, lambda t: "sqlite://", "in-memory SQLite"),
    ("in-memory-named", None, lambda t: "sqlite:///:memory:", "in-memory SQLite"),
    ("foreign-sqlite", foreign_sqlite, lambda t: str(t), "holds other tables (notes) and no SoupBench schema"),
]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder to snapshot; the cache points inside it and must not appear (no work was done)."""
    monkeypatch.setenv("SOUPBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert importlib.util.find_spec("psycopg2") is None, "the driver-missing case needs psycopg2 absent"
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("case, make, value, said", CASES, ids=[c[0] for c in CASES])
def test_a_bad_db_is_one_line_exit_2_and_nothing_written(workspace, command, case, make, value, said) -> None:
    target = workspace / "target"
    if make is not None:
        make(target)
    before = snapshot(workspace)
    result = cli.invoke(app, [*command, "--db", value(target)])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert said in result.output
    assert snapshot(workspace) == before  # no file, no folder, no cache entry, no WAL switch


def test_a_foreign_sqlite_file_keeps_its_journal_mode_and_tables(workspace: Path) -> None:
    path = workspace / "mine.db"
    foreign_sqlite(path)
    for opener in (open_store, open_readonly):
        with pytest.raises(ValueError, match="holds other tables"):
            opener(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert connection.execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]
    connection.close()
    assert sorted(p.name for p in workspace.iterdir()) == ["mine.db"]


def test_an_unwritable_folder_is_refused_before_any_work(workspace: Path) -> None:
    locked = workspace / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
        try:
            result = cli.invoke(app, ["run", "--db", str(locked / "r.db")])
        finally:
            locked.chmod(0o755)
        output, code = result.output, result.exit_code
    else:  # root writes through permissions: make the folder a read-only file system instead
        if shutil.which("unshare") is None:
            pytest.fail("as root this test needs unshare (util-linux) for a read-only mount")
        script = (f"mount -t tmpfs -o ro,size=1m tmpfs {locked} && "
                  f"exec {sys.executable} -m benchmark.cli run --db {locked / 'r.db'}")
        done = subprocess.run(["unshare", "--mount", "--", "sh", "-c", script], cwd=REPO, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        output, code = done.stderr + done.stdout, done.returncode
    assert code == 2, output
    assert output.startswith("error: ") and output.count("\n") == 1
    assert f"folder {locked} is not writable" in output
    assert not (workspace / "cache").exists()


@pytest.mark.parametrize("value", ["garbage://x/y", "foreign"])
def test_run_refuses_a_bad_db_before_importing_torch(workspace: Path, value: str) -> None:
    # A real process: its exit code and stderr as a shell sees them, and proof that no work began.
    if value == "foreign":
        foreign_sqlite(workspace / "mine.db")
        value = str(workspace / "mine.db")
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules))\n"
            "from benchmark.cli import app\n"
            "app(['run', '--db', sys.argv[1]])\n")
    done = subprocess.run([sys.executable, "-c", code, value], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == "torch imported: False\n"


def test_run_with_a_bad_suite_creates_no_database(workspace: Path) -> None:
    result = cli.invoke(app, ["run", "--suite", str(workspace / "no-such-suite.yaml"), "--db", "r.db"])
    assert result.exit_code == 2
    assert not (workspace / "r.db").exists()


def test_plain_postgresql_url_means_psycopg_when_psycopg2_is_absent(pg_url: str) -> None:
    # (SQLAlchemy 2.1 reads it so itself; 2.0, which pyproject allows, would want psycopg2.)
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with open_store(plain) as store:
        assert store.engine.dialect.driver == "psycopg"
        assert store.count_runs() == 0
    result = cli.invoke(app, ["results", "--db", plain, "--format", "json"])
    assert result.exit_code == 0 and result.stdout.strip() == "[]"
