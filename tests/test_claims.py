"""Cell claims (benchmark.claims) on SQLite and PostgreSQL: one holder per cell, taken over from a
dead runner at once and from a silent one after its lease, released with the cell's run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from benchmark.claims import ClaimBook, process_alive
from benchmark.storage import CellClaim, DuplicateRunError, open_store, params_key
from tests.test_storage import make_run

REPO = Path(__file__).resolve().parent.parent
KEY = params_key(make_run().method_params)
CELL = ("micro", "ties", KEY, 0)  # suite, method, params key, seed of make_run()


@pytest.fixture
def store(any_db_url: str):
    with open_store(any_db_url) as opened:
        yield opened


def claims_in(store) -> list[tuple[str, str]]:
    with Session(store.engine) as session:
        return sorted(tuple(row) for row in session.execute(select(CellClaim.task, CellClaim.owner)))


def test_one_runner_at_a_time_holds_a_cell(store) -> None:
    with ClaimBook(store) as first, ClaimBook(store) as second:
        got = first.claim(*CELL, ["math", "code"])
        assert (got.held, got.stored, got.busy) == (["math", "code"], [], {})
        other = second.claim(*CELL, ["code", "math_code"])
        assert other.held == ["math_code"] and list(other.busy) == ["code"]
        assert f"pid {os.getpid()}" in other.busy["code"]
        assert claims_in(store) == sorted([("math", first.owner), ("code", first.owner),
                                           ("math_code", second.owner)])
    assert claims_in(store) == []  # closing a book lets go of what it still holds


def test_storing_a_cell_deletes_its_claim_in_the_same_transaction(store) -> None:
    with ClaimBook(store) as runner, ClaimBook(store) as late:
        assert runner.claim(*CELL, ["math_code"]).held == ["math_code"]
        store.save_runs([make_run()], owner=runner.owner)
        assert claims_in(store) == []
        outcome = late.claim(*CELL, ["math_code", "math"])
        assert (outcome.stored, outcome.held) == (["math_code"], ["math"])
        assert claims_in(store) == [("math", late.owner)]  # no claim is left on the stored cell


def test_a_failed_batch_keeps_the_claim(store) -> None:
    with ClaimBook(store) as runner:
        runner.claim(*CELL, ["math", "code"])
        with pytest.raises(Exception):
            store.save_runs([make_run(task="math"), make_run(task="code", value=None)], owner=runner.owner)
        assert [task for task, _ in claims_in(store)] == ["code", "math"]


def test_a_claim_of_a_killed_runner_is_taken_over_at_once(store, any_db_url: str) -> None:
    # A real runner process holds the claim and is killed -9: nothing released it, its process is gone.
    code = ("import sys, time\n"
            "from benchmark.claims import ClaimBook\nfrom benchmark.storage import open_store\n"
            "book = ClaimBook(open_store(sys.argv[1]))\n"
            f"assert book.claim(*{CELL!r}, ['math_code']).held == ['math_code']\n"
            "print('held', flush=True)\ntime.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, any_db_url], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline() == "held\n"
        with ClaimBook(store) as runner:
            assert list(runner.claim(*CELL, ["math_code"]).busy) == ["math_code"]  # alive: left to it
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with ClaimBook(store) as runner:
            assert runner.claim(*CELL, ["math_code"]).held == ["math_code"]
            assert claims_in(store) == [("math_code", runner.owner)]
    finally:
        holder.kill()
        holder.wait()


def _move_elsewhere(store, owner: str, heartbeat_at: float | None = None) -> None:
    """Make `owner`'s claims look like those of a runner on another machine (no PID to check)."""
    values = {"process_space": "another-machine", "host": "elsewhere"}
    if heartbeat_at is not None:
        values["heartbeat_at"] = heartbeat_at
    with Session(store.engine) as session, session.begin():
        session.execute(update(CellClaim).where(CellClaim.owner == owner).values(**values))


def test_a_claim_from_another_machine_is_kept_until_its_lease_runs_out(store) -> None:
    with ClaimBook(store, lease_seconds=60) as remote, ClaimBook(store, lease_seconds=60) as local:
        remote.claim(*CELL, ["math_code"])
        _move_elsewhere(store, remote.owner)
        assert local.claim(*CELL, ["math_code"]).busy == {"math_code": f"elsewhere pid {os.getpid()}"}
        _move_elsewhere(store, remote.owner, heartbeat_at=time.time() - 61)
        assert local.claim(*CELL, ["math_code"]).held == ["math_code"]
        assert claims_in(store) == [("math_code", local.owner)]


def test_the_heartbeat_keeps_a_long_computation_claimed(store) -> None:
    with ClaimBook(store, heartbeat_seconds=0.2, lease_seconds=1.5) as remote:
        remote.claim(*CELL, ["math_code"])
        _move_elsewhere(store, remote.owner)
        time.sleep(2.5)  # longer than the lease: only the heartbeat keeps the claim
        with ClaimBook(store, lease_seconds=1.5) as local:
            assert list(local.claim(*CELL, ["math_code"]).busy) == ["math_code"]
            remote._stop.set()  # the runner stops beating (hung, or cut off from the database)
            remote._thread.join()
            time.sleep(2.0)
            assert local.claim(*CELL, ["math_code"]).held == ["math_code"]


def test_two_runners_taking_over_one_dead_claim_cannot_both_win(store) -> None:
    dead = ClaimBook(store, heartbeat_seconds=3600, lease_seconds=60)
    dead.claim(*CELL, ["math_code"])
    _move_elsewhere(store, dead.owner, heartbeat_at=time.time() - 3600)
    with Session(store.engine) as session:
        stale = session.scalars(select(CellClaim)).one()
    with ClaimBook(store, lease_seconds=60) as first, ClaimBook(store, lease_seconds=60) as second:
        # Both read the same stale row; the compare-and-set lets exactly one replace it.
        assert [first._take_over(stale, time.time()), second._take_over(stale, time.time())] == [True, False]
        assert list(second.claim(*CELL, ["math_code"]).busy) == ["math_code"]
        assert claims_in(store) == [("math_code", first.owner)]
    dead.close()


def test_process_alive_tells_a_reused_pid_from_its_first_process() -> None:
    import psutil

    me = psutil.Process()
    assert process_alive(me.pid, me.create_time())
    assert not process_alive(me.pid, me.create_time() - 100)  # same PID, another start: another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(child.pid).create_time()
    child.wait()
    assert not process_alive(child.pid, started)


# ---------------------------------------------------------------------- saving beside other runners


def test_save_runs_can_leave_out_cells_stored_meanwhile(store) -> None:
    store.save_runs([make_run(task="math")])
    with pytest.raises(DuplicateRunError):
        store.save_runs([make_run(task="math", value=0.9), make_run(task="code")])
    left_out = store.save_runs([make_run(task="math", value=0.9), make_run(task="code")], if_stored="skip")
    assert [r.task for r in left_out] == ["math"]
    with Session(store.engine) as session:
        from benchmark.storage import Run, Score

        assert session.scalar(select(func.count()).select_from(Run)) == 2
        values = session.execute(select(Run.task, Score.value).join(Score).where(Score.primary)).all()
    assert sorted(values) == [("code", 0.5), ("math", 0.5)]  # the stored math run was kept, not replaced
