"""Runners that share a database cooperate: a cell is computed by one of them, the others skip it.

Before it merges and evaluates, a runner claims the cells it is about to compute: one row per cell
in `cell_claims`, whose UNIQUE constraint lets exactly one runner insert it. A cell that is stored
as ok, or claimed by a runner that is alive, is skipped, and the runner goes on with the rest of
its plan; the claim is deleted in the transaction that stores the cell's run. Claims rather than
only catching the duplicate at save time, because a cell costs a merge and an evaluation (minutes,
for methods that train): two runners with the same plan would otherwise each compute all of it.

A runner that dies holding claims (kill -9, out of memory, a lost machine) must not block its
cells for ever. Its claims are taken over when:

- it ran in this process space (same kernel boot and PID namespace) and its process is gone, or
  its PID now belongs to a process that started at another time: known at once, so a rerun right
  after a crash computes everything the crashed run left;
- its heartbeat is older than the lease: a background thread refreshes the heartbeat of every
  claim its runner holds, so this only happens to a runner that stopped (or lost the database)
  for longer than the lease. Clocks of the hosts sharing a database are assumed to agree to well
  within the lease.

A take-over is a compare-and-set on the old owner and heartbeat, so two runners taking over the
same dead claim cannot both win. Should a claim ever be taken from a runner that was alive after
all, the cell is still stored once: the second save leaves it out (`Store.save_runs(if_stored=
"skip")`), only the compute is lost.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import psutil
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from benchmark.storage import CellClaim, Run, Store

HEARTBEAT_SECONDS = 30.0
LEASE_SECONDS = 300.0


def process_space() -> str:
    """Where a PID names one process: this kernel boot and this PID namespace (two containers on
    one host share a hostname pattern and a boot, never a PID namespace)."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
        return f"{boot}:{namespace}"[:64]
    except OSError:  # not Linux: the host name is the best there is
        return f"host:{socket.gethostname()}"[:64]


def process_alive(pid: int, started: float) -> bool:
    """Whether the process `pid` that started at `started` (Unix seconds) still runs here; a zombie
    has ended, a PID reused by a later process names another one."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - started) <= 1.0
    except psutil.NoSuchProcess:  # ZombieProcess is one too
        return False
    except psutil.AccessDenied:  # it exists; we may not look at it
        return True


@dataclass
class ClaimOutcome:
    """What a claim on some tasks of one (suite, method, params, seed) came to."""

    held: list[str] = field(default_factory=list)  # this runner computes these now
    stored: list[str] = field(default_factory=list)  # stored as ok meanwhile: nothing to do
    busy: dict[str, str] = field(default_factory=dict)  # task -> the live runner computing it


class ClaimBook:
    """One runner's claims on one database: taking them, keeping them alive, letting them go.

    Use it as a context manager: on exit every claim still held is deleted (a cell that was not
    stored is then free for the next runner) and the heartbeat thread stops.
    """

    def __init__(self, store: Store, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        self.store = store
        self.owner = uuid.uuid4().hex
        self.heartbeat_seconds = heartbeat_seconds
        self.lease_seconds = lease_seconds
        self._space = process_space()
        self._pid = os.getpid()
        self._started = psutil.Process(self._pid).create_time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------- claiming

    def claim(self, suite: str, method: str, params_key: str, seed: int, tasks: list[str]) -> ClaimOutcome:
        """Claim each task's cell; the outcome says which this runner now holds."""
        outcome = ClaimOutcome()
        for task in tasks:
            cell = {"suite": suite, "method": method, "params_key": params_key, "task": task, "seed": seed}
            result = self._claim_one(cell)
            if result is None:
                outcome.held.append(task)
            elif result == "stored":
                outcome.stored.append(task)
            else:
                outcome.busy[task] = result
        if outcome.held:
            self._start_heartbeat()
        return outcome

    def _claim_one(self, cell: dict) -> str | None:
        """None if this runner now holds the cell; "stored"; or who else is computing it."""
        for _ in range(3):
            now = time.time()
            with self.store.sessions() as session:
                # Insert first, then look for the run: a run stored by a runner that held the
                # claim until its commit is then always seen (its claim held our insert till then).
                session.add(CellClaim(**cell, owner=self.owner, **self._me(now)))
                try:
                    session.flush()
                except IntegrityError:
                    session.rollback()
                else:
                    if self._stored(session, cell):
                        session.rollback()
                        return "stored"
                    session.commit()
                    return None
                other = session.scalars(select(CellClaim).where(*_cell_filter(cell))).one_or_none()
                if other is None:  # let go of between our insert and this look: insert again
                    continue
                if not self._is_dead(other, now):
                    return f"{other.host} pid {other.pid}"
            if not self._take_over(other, now):  # another runner took it over first: look again
                continue
            if self._stored_now(cell):
                self.release(cell["suite"], cell["method"], cell["params_key"], cell["seed"], [cell["task"]])
                return "stored"
            return None
        return "another runner"

    def _take_over(self, claim: CellClaim, now: float) -> bool:
        """Replace a dead runner's claim by ours if nobody has since: a compare-and-set on the
        owner and heartbeat read, so of two runners taking over one claim exactly one wins."""
        with self.store.sessions.begin() as session:
            taken = session.execute(
                update(CellClaim)
                .where(CellClaim.id == claim.id, CellClaim.owner == claim.owner,
                       CellClaim.heartbeat_at == claim.heartbeat_at)
                .values(owner=self.owner, **self._me(now)))
        return taken.rowcount == 1

    def _me(self, now: float) -> dict:
        return {"host": socket.gethostname()[:255], "pid": self._pid, "process_space": self._space,
                "process_started": self._started, "claimed_at": now, "heartbeat_at": now}

    def _is_dead(self, claim: CellClaim, now: float) -> bool:
        if claim.owner == self.owner:
            return True  # our own (a cell claimed twice in one plan): ours to use
        if now - claim.heartbeat_at > self.lease_seconds:
            return True
        return claim.process_space == self._space and not process_alive(claim.pid, claim.process_started)

    @staticmethod
    def _stored(session, cell: dict) -> bool:
        query = select(Run.id).where(Run.suite == cell["suite"], Run.method == cell["method"],
                                     Run.params_key == cell["params_key"], Run.task == cell["task"],
                                     Run.seed == cell["seed"], Run.status == "ok")
        return session.scalars(query).first() is not None

    def _stored_now(self, cell: dict) -> bool:
        with self.store.sessions() as session:
            return self._stored(session, cell)

    def release(self, suite: str, method: str, params_key: str, seed: int, tasks: list[str]) -> None:
        """Let go of this runner's claims on these cells (their runs were not stored)."""
        with self.store.sessions.begin() as session:
            for task in tasks:
                cell = {"suite": suite, "method": method, "params_key": params_key, "task": task, "seed": seed}
                session.execute(delete(CellClaim).where(*_cell_filter(cell), CellClaim.owner == self.owner))

    # ------------------------------------------------------------------------------ liveness

    def _start_heartbeat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="soupbench-claims-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            self.heartbeat()

    def heartbeat(self) -> None:
        """Mark every claim of this runner alive now. A database that is busy or briefly away only
        delays the beat: the lease is many beats long."""
        try:
            with self.store.sessions.begin() as session:
                session.execute(update(CellClaim).where(CellClaim.owner == self.owner)
                                .values(heartbeat_at=time.time()))
        except DBAPIError:
            pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            with self.store.sessions.begin() as session:
                session.execute(delete(CellClaim).where(CellClaim.owner == self.owner))
        except DBAPIError:  # the database went away: the claims expire with the lease
            pass

    def __enter__(self) -> ClaimBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cell_filter(cell: dict) -> tuple:
    return (CellClaim.suite == cell["suite"], CellClaim.method == cell["method"],
            CellClaim.params_key == cell["params_key"], CellClaim.task == cell["task"],
            CellClaim.seed == cell["seed"])
