"""Runners sharing one database cooperate, on SQLite and PostgreSQL: two `soupbench run` processes
with identical plans store every cell once; a cell that another process is computing is left to it
while the rest of the plan goes on, and once that process is killed the next run computes it.

The second test runs the CLI in this process (as tests/test_cli_e2e.py does) beside a real process
holding the claim: a runner process costs its imports (torch, transformers, lm-eval: most of its
time on a tiny suite), and what is tested there is how this runner treats the other's claim."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, func, select

from typer.testing import CliRunner

from benchmark import catalog
from benchmark.cli import app
from benchmark.plan import Cell
from benchmark.storage import CellClaim, Run
from tests.conftest import TINY_SUITE

REPO = Path(__file__).resolve().parent.parent
SKILLS = ["math", "code"]
TASKS = ["math", "code", "math_code"]
METHODS = ["base", "expert-math", "expert-code", "task_arithmetic"]
cli = CliRunner()


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    """The tiny suite, its base and seed-0 experts already in the session's cache, so that the
    runners below spend their time on the cells they share (merge, evaluate, store)."""
    folder = tmp_path_factory.mktemp("concurrent")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SUITE))
    result = cli.invoke(app, ["run", "--suite", str(path), "--db", str(folder / "warm.db"), "--method", "base",
                              "--task", "math"])
    assert result.exit_code == 0, result.output
    return path


def _run(suite: Path, url: str, methods: list[str], tasks: list[str] | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "benchmark.cli", "run", "--suite", str(suite), "--db", url]
    args += [a for m in methods for a in ("--method", m)] + [a for t in tasks or [] for a in ("--task", t)]
    # the test session's cache (tests/conftest.py sets SOUPBENCH_CACHE in os.environ)
    return subprocess.Popen(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen) -> tuple[int, int, str]:
    """(cells computed, cells already stored) as the runner reported them, and its output."""
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 0 and "Traceback" not in output, output
    return _counts(output)


def _run_here(suite: Path, url: str, methods: list[str]) -> tuple[int, int, str]:
    result = cli.invoke(app, ["run", "--suite", str(suite), "--db", url, *[a for m in methods for a in ("--method", m)]])
    assert result.exit_code == 0, (result.output, result.exception)
    return _counts(result.output)


def _counts(output: str) -> tuple[int, int, str]:
    found = re.search(r"computed (\d+) cells, (\d+) already stored", output)
    assert found, output
    return int(found[1]), int(found[2]), output


def _stored(url: str) -> tuple[dict[tuple[str, str], int], int]:
    """How many rows each (method, task) has (all must be ok), and how many claims are left."""
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(select(Run.method, Run.task, Run.status, func.count())
                                  .group_by(Run.method, Run.task, Run.status)).all()
        claims = connection.scalar(select(func.count()).select_from(CellClaim))
    engine.dispose()
    assert {status for _, _, status, _ in rows} <= {"ok"}, rows
    return {(method, task): n for method, task, _, n in rows}, claims


def test_two_runners_with_one_plan_store_every_cell_once(suite_file: Path, any_db_url: str) -> None:
    # Before claims, the second runner died on DuplicateRunError and left the rest of its plan undone.
    runners = [_run(suite_file, any_db_url, METHODS) for _ in range(2)]
    results = [_finish(r) for r in runners]
    cells, claims = _stored(any_db_url)
    assert cells == {(m, t): 1 for m in METHODS for t in TASKS}
    assert claims == 0
    # Between them they computed each cell once; what one computed the other skipped or left to it.
    assert sum(computed for computed, _, _ in results) == len(METHODS) * len(TASKS), [r[2] for r in results]
    print("computed by each runner:", [computed for computed, _, _ in results])


def test_a_cell_another_runner_computes_is_left_to_it_and_a_killed_runners_cell_is_redone(
        suite_file: Path, any_db_url: str) -> None:
    base = Cell(catalog.create_method("base", {}, SKILLS), 0, tuple(SKILLS), ("math",))
    cell = (TINY_SUITE["name"], base.label, base.params_key, 0)
    # A live runner holds (base, math, seed 0): a real process, in the middle of computing it.
    holder_code = ("import sys, time\n"
                   "from benchmark.claims import ClaimBook\nfrom benchmark.storage import open_store\n"
                   "book = ClaimBook(open_store(sys.argv[1]))\n"
                   f"assert book.claim(*{cell!r}, ['math']).held == ['math']\n"
                   "print('held', flush=True)\ntime.sleep(900)\n")
    holder = subprocess.Popen([sys.executable, "-c", holder_code, any_db_url], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline() == "held\n"
        computed, skipped, output = _run_here(suite_file, any_db_url, ["base", "expert-math"])
        assert (computed, skipped) == (5, 0)
        assert "1 being computed by another runner" in output
        cells, claims = _stored(any_db_url)
        assert ("base", "math") not in cells and len(cells) == 5 and claims == 1
        holder.send_signal(signal.SIGKILL)  # it dies holding the claim
        holder.wait(timeout=30)
        computed, skipped, output = _run_here(suite_file, any_db_url, ["base", "expert-math"])
        assert (computed, skipped) == (1, 5), output
        cells, claims = _stored(any_db_url)
        assert cells == {(m, t): 1 for m in ["base", "expert-math"] for t in TASKS} and claims == 0
    finally:
        holder.kill()
        holder.wait()
