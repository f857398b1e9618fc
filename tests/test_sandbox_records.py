"""The sandbox in the rest of SoupBench: which tasks need it, the refusal before any work, and the
isolation stored with every run (the leaderboard's display of it is tested with the site's pages).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from benchmark import sandbox
from benchmark.sandbox import ALLOW_WEAK_ENV, isolation_report
from benchmark.storage import collect_provenance
from benchmark.taskinfo import TASKS
from tests.sandbox_fixtures import tool_only_path


def test_provenance_records_the_isolation_in_force() -> None:
    assert collect_provenance()["sandbox"] == isolation_report()


def test_tasks_that_run_programs_say_so() -> None:
    """`executes_programs` (lm-eval's unsafe_code) is true exactly for the tasks whose YAML runs the
    ExecuteProgram filter: the runner's check for a sandbox relies on it."""
    for name in TASKS.names():
        info = TASKS.get(name)
        assert info.executes_programs == ("filters.ExecuteProgram" in info.yaml_path.read_text()), name
    assert TASKS.get("math_code").executes_programs and not TASKS.get("math").executes_programs


@pytest.fixture
def without_bubblewrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """This process on a machine without bwrap on PATH (probed afresh, and again afterwards)."""
    monkeypatch.setenv("PATH", tool_only_path(tmp_path))
    monkeypatch.delenv(ALLOW_WEAK_ENV, raising=False)
    sandbox._probe_once.cache_clear()
    yield
    sandbox._probe_once.cache_clear()


def test_a_run_with_program_tasks_is_refused_before_any_work(tiny_suite_file: Path, tmp_path: Path,
                                                            without_bubblewrap: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.runner import run_grid
    from benchmark.storage import open_store
    from benchmark.suite import load_suite

    # A cache of this test's own: the session's holds what earlier tests built.
    monkeypatch.setenv("SOUPBENCH_CACHE", str(tmp_path / "cache"))

    db = tmp_path / "runs.db"
    store = open_store(f"sqlite:///{db}")
    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        run_grid(load_suite(str(tiny_suite_file)), store, methods=["base"], tasks=["math", "math_code"])
    store.close()
    assert str(refused.value).startswith("sandbox: bubblewrap (bwrap) is not installed")
    assert ALLOW_WEAK_ENV in str(refused.value)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from runs").fetchone() == (0,)
    cache = Path(os.environ["SOUPBENCH_CACHE"])
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no base model, no expert, no task data
