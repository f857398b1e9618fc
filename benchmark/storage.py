"""Where runs are stored: the schema (SQLAlchemy 2 ORM) and the runner's write API.

A run is one cell (suite, method with parameters, task, seed) with its scores, costs, provenance,
the frozen spec that reruns it, and the per-sample outputs. The runner hands in plain dataclasses
(`RunRecord`) and never touches ORM objects, so that storage can change without touching it.

Guarantees the rest of SoupBench relies on:

- a batch is saved in one transaction: all of it or none of it;
- a cell stored as `ok` is never duplicated nor overwritten: saving it again raises
  `DuplicateRunError`, or is left out when the caller asks (runners sharing a database, which
  also claim cells through `benchmark.claims` so that one computes what the other skips);
- a cell stored as `failed` is replaced by the next save of that cell, so a rerun can fix it;
- a database is opened only once it is known to be one SoupBench can use (`benchmark.database`
  checks the URL and file, `benchmark.schema_version` the schema revision), else a `UserError`.

This module imports no torch, no methods and no training code: `benchmark.results` (and through it
the leaderboard) reuses the schema defined here.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, CheckConstraint, DateTime, Double, Engine, ForeignKey, Integer, String, Text
from sqlalchemy import Connection, UniqueConstraint, delete, func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from benchmark import database, schema_version
from benchmark.errors import UserError

DB_ENV_VAR = "SOUPBENCH_DB"
DEFAULT_DB_FILE = "soupbench.db"
STATUSES = ("ok", "failed")


class StorageError(RuntimeError):
    """A batch the database refused; nothing of the batch was saved."""


class DuplicateRunError(StorageError):
    """A cell that is already stored with status ok (or twice in one batch) was saved again."""


# --------------------------------------------------------------------------------------- schema


class Base(DeclarativeBase):
    pass


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Run(Base):
    """One cell of the grid. The UNIQUE constraint is what makes "never recompute" safe."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("suite", "method", "params_key", "task", "seed", name="uq_runs_cell"),
        CheckConstraint("status IN ('ok', 'failed')", name="ck_runs_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite: Mapped[str] = mapped_column(String(200), index=True)
    method: Mapped[str] = mapped_column(String(200))
    method_params: Mapped[dict[str, Any]] = mapped_column(JSON)
    params_key: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    merge_seconds: Mapped[float]
    eval_seconds: Mapped[float]
    peak_memory_mb: Mapped[float]
    output_rank: Mapped[int | None] = mapped_column(Integer)
    consumes: Mapped[str] = mapped_column(String(64))
    n_target_examples: Mapped[int | None] = mapped_column(Integer)
    base_fingerprint: Mapped[str] = mapped_column(String(128))
    expert_fingerprints: Mapped[dict[str, str]] = mapped_column(JSON)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)

    scores: Mapped[list[Score]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )
    samples: Mapped[list[Sample]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class Score(Base):
    """One metric of one run, with lm-eval's stderr over the samples when it gives one."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("run_id", "metric", name="uq_scores_metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    metric: Mapped[str] = mapped_column(String(200))
    value: Mapped[float]
    stderr: Mapped[float | None]
    n_samples: Mapped[int] = mapped_column(Integer)
    # "primary" is an SQL keyword; SQLAlchemy quotes it, hand-written SQL must too.
    primary: Mapped[bool]

    run: Mapped[Run] = relationship(back_populates="scores")


class Sample(Base):
    """One evaluated document of one run: what the model saw, wrote, and (for code) what ran."""

    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    doc_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    generation: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    executed: Mapped[str | None] = mapped_column(Text)
    correct: Mapped[bool | None]
    extra: Mapped[dict[str, Any]] = mapped_column(JSON)

    run: Mapped[Run] = relationship(back_populates="samples")


class CellClaim(Base):
    """A cell one runner is computing now (see `benchmark.claims`): the UNIQUE constraint lets one
    runner at a time hold a cell; the row goes in the transaction that stores the cell's run."""

    __tablename__ = "cell_claims"
    __table_args__ = (UniqueConstraint("suite", "method", "params_key", "task", "seed", name="uq_claims_cell"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(200))
    params_key: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(64), index=True)  # one token per runner (per run_grid call)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    process_space: Mapped[str] = mapped_column(String(64))  # where `pid` means this process (see claims)
    process_started: Mapped[float] = mapped_column(Double)  # its start time: a reused pid is another process
    # Unix seconds, as floats: portable across SQLite and PostgreSQL without time-zone handling.
    claimed_at: Mapped[float] = mapped_column(Double)
    heartbeat_at: Mapped[float] = mapped_column(Double)


class Submission(Base):
    """A result bundle imported into this database (`benchmark.submission`): who sent it, its hash,
    the method's source, and how far the keeper has verified it. Its runs are ordinary rows of
    `runs`, linked through `submission_runs`, so every query of results reads them as it reads the
    rest (a database made before submissions existed simply has none)."""

    __tablename__ = "submissions"
    __table_args__ = (
        CheckConstraint("state IN ('imported', 'reproduced', 'not_reproduced')", name="ck_submissions_state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bundle_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    suite: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(200))
    submitter: Mapped[str] = mapped_column(String(200))
    contact: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when the bundle was written
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    method_file: Mapped[str] = mapped_column(String(200))
    method_source: Mapped[str] = mapped_column(Text)
    method_source_sha256: Mapped[str] = mapped_column(String(64))
    environment: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="imported")
    # `soupbench verify`: of the bundle's per-sample outputs, how many its re-run reproduced.
    reproduced_samples: Mapped[int | None] = mapped_column(Integer)
    compared_samples: Mapped[int | None] = mapped_column(Integer)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SubmissionRun(Base):
    """Which stored runs came in with which submission (a run comes in with at most one)."""

    __tablename__ = "submission_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), unique=True)


class HiddenScore(Base):
    """A stored run's method scored on a hidden eval set: the same merge, documents generated from a
    seed only the leaderboard's keeper holds (`soupbench verify --hidden-seed`). `hidden_set` names
    the set by a digest of that seed, never the seed itself."""

    __tablename__ = "hidden_scores"
    __table_args__ = (UniqueConstraint("run_id", "hidden_set", "metric", name="uq_hidden_scores_metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    hidden_set: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(200))
    value: Mapped[float]
    stderr: Mapped[float | None]
    n_samples: Mapped[int] = mapped_column(Integer)
    primary: Mapped[bool]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


# ------------------------------------------------------------------------------ write-side types


@dataclass
class ScoreRecord:
    metric: str
    value: float
    stderr: float | None
    n_samples: int
    primary: bool


@dataclass
class SampleRecord:
    doc_index: int
    prompt: str
    generation: str
    target: str
    executed: str | None
    correct: bool | None
    extra: dict


@dataclass
class RunRecord:
    """Everything the runner knows about one finished (or failed) cell."""

    suite: str
    method: str
    method_params: dict
    task: str
    seed: int
    scores: list[ScoreRecord]
    samples: list[SampleRecord]
    merge_seconds: float
    eval_seconds: float
    peak_memory_mb: float
    output_rank: int | None
    consumes: str
    n_target_examples: int | None
    base_fingerprint: str
    expert_fingerprints: dict[str, str]
    provenance: dict
    spec: dict
    status: str = "ok"
    error: str | None = None


@dataclass
class SubmissionRecord:
    """What an imported bundle says of itself (see `Submission`)."""

    bundle_sha256: str
    suite: str
    method: str
    submitter: str
    contact: str
    created_at: datetime
    method_file: str
    method_source: str
    method_source_sha256: str
    environment: dict


class AlreadyImportedError(StorageError, UserError):
    """A bundle whose hash, or one of whose cells, is already in the database."""


def canonical_json(params: dict) -> str:
    """The one spelling of a parameter dict: sorted keys, no spaces, no NaN.

    Non-JSON values raise instead of being str()-ed, because a repr can carry a memory address and
    would give the same parameters a different key on every run.
    """
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def params_key(params: dict) -> str:
    """A short stable hash of a method's parameters, part of a cell's identity.

    Hashing the canonical JSON (rather than storing it in the UNIQUE key) keeps the key short and
    indexable on every database, and independent of dict order.
    """
    return hashlib.sha256(canonical_json(params).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------- URL and store


def resolve_db_url(cli_value: str | None) -> str:
    """`--db`, else `$SOUPBENCH_DB`, else `soupbench.db` in the working directory.

    A bare file path becomes an absolute SQLite URL so that the same run started from another
    directory still finds the same file.
    """
    value = cli_value or os.environ.get(DB_ENV_VAR) or DEFAULT_DB_FILE
    if "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    return f"sqlite:///{path}"


class Store:
    """The runner's handle on the database: asks what is done, saves what was run."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def sessions(self) -> sessionmaker:
        """Sessions on this database, for the modules that keep a table of their own in it
        (`benchmark.claims`)."""
        return self._sessions

    def completed_cells(self, suite: str, method: str, params_key: str, seed: int) -> set[str]:
        """Task names already stored as ok for this (suite, method, params, seed): skip them."""
        query = select(Run.task).where(*_same_cell(suite, method, params_key, seed), Run.status == "ok")
        with self._sessions() as session:
            return set(session.scalars(query))

    def stored_suite(self, suite: str) -> tuple[dict, str] | None:
        """The suite spec and base fingerprint of one completed cell of `suite`, or None if it has
        none. The runner checks them against the suite it is about to run (same name, same recipe)."""
        query = select(Run.spec, Run.base_fingerprint).where(Run.suite == suite, Run.status == "ok").limit(1)
        with self._sessions() as session:
            row = session.execute(query).first()
        return None if row is None else (row[0].get("suite", {}), row[1])

    def save_runs(self, runs: list[RunRecord], owner: str | None = None,
                  if_stored: Literal["raise", "skip"] = "raise") -> list[RunRecord]:
        """Save a batch in one transaction: all or nothing; return the records left out.

        A failed row of the same cell is replaced. An ok row is never duplicated: by default the
        whole batch is refused with `DuplicateRunError` (so that a runner that recomputes finished
        cells notices its bug instead of wasting the compute unseen); with `if_stored="skip"` the
        cells another runner stored meanwhile are left out and returned, the rest is saved (what
        a runner that shares the database wants). `owner`'s claims on the saved cells (see
        `benchmark.claims`) are deleted in the same transaction: another runner sees each cell
        either claimed or stored, never free in between.
        """
        for record in runs:
            _validate(record)
        skipped: list[RunRecord] = []
        # A cell another runner commits between our check and our insert surfaces as a UNIQUE
        # violation; a second attempt sees it stored and (when skipping) leaves it out.
        for attempt in range(3):
            try:
                with self._sessions.begin() as session:
                    skipped = [r for r in runs if not self._save_one(session, r, if_stored == "skip")]
                    if owner is not None:
                        for record in runs:
                            session.execute(delete(CellClaim).where(
                                *_same_cell(record.suite, record.method, params_key(record.method_params),
                                            record.seed, CellClaim),
                                CellClaim.task == record.task, CellClaim.owner == owner))
                return skipped
            except IntegrityError as error:
                text = str(error.orig)
                cells = ", ".join(_cell_name(r) for r in runs)
                if "uq_runs_cell" in text or "UNIQUE constraint failed: runs." in text:
                    if if_stored == "skip" and attempt < 2:
                        continue
                    raise DuplicateRunError(
                        f"a cell of this batch is already stored as ok; nothing was saved ({cells})"
                    ) from error
                raise StorageError(
                    f"the database refused the batch; nothing was saved ({text}; batch: {cells})"
                ) from error
        raise AssertionError("unreachable")

    def import_submission(self, submission: SubmissionRecord, runs: list[RunRecord]) -> int:
        """Store a bundle's runs and its submission row in one transaction; return its id.

        All or nothing: a bundle already imported (same hash), or any of whose cells is already
        stored as ok, is refused with `AlreadyImportedError` and nothing of it is written.
        """
        for record in runs:
            _validate(record)
        try:
            with self._sessions.begin() as session:
                existing = session.scalars(select(Submission.id).where(
                    Submission.bundle_sha256 == submission.bundle_sha256)).first()
                if existing is not None:
                    raise AlreadyImportedError(f"bundle {submission.bundle_sha256[:16]} is already imported "
                                               f"(submission {existing}); nothing was written")
                row = Submission(**asdict(submission), state="imported")
                session.add(row)
                session.flush()
                for record in runs:
                    key = params_key(record.method_params)
                    stored = session.scalars(select(Run).where(
                        *_same_cell(record.suite, record.method, key, record.seed),
                        Run.task == record.task)).one_or_none()
                    if stored is not None and stored.status == "ok":
                        raise AlreadyImportedError(
                            f"{_cell_name(record)} is already stored (run id {stored.id}); a bundle adds "
                            "cells, it never replaces them; nothing of this bundle was written")
                    if stored is not None:
                        session.delete(stored)
                        session.flush()
                    run = _to_orm(record, key)
                    session.add(run)
                    session.flush()
                    session.add(SubmissionRun(submission_id=row.id, run_id=run.id))
                return row.id
        except IntegrityError as error:
            raise StorageError(f"the database refused the bundle; nothing was written ({error.orig})") from error

    def submission_id(self, bundle_sha256: str) -> int | None:
        """The submission imported from the bundle with this sha256, if any."""
        with self._sessions() as session:
            return session.scalars(select(Submission.id).where(Submission.bundle_sha256 == bundle_sha256)).first()

    def record_verification(self, bundle_sha256: str, reproduced: int, compared: int, details: dict) -> str | None:
        """Store what `soupbench verify` found for an imported bundle; return its new state, or None
        when the bundle is not imported here (built-in rows are verified, not submitted)."""
        with self._sessions.begin() as session:
            row = session.scalars(select(Submission).where(Submission.bundle_sha256 == bundle_sha256)).first()
            if row is None:
                return None
            row.state = "reproduced" if compared and reproduced == compared else "not_reproduced"
            row.reproduced_samples, row.compared_samples = reproduced, compared
            row.verified_at, row.verification = _utcnow(), details
            return row.state

    def run_ids(self, records: list[RunRecord]) -> list[int | None]:
        """The stored ok run of each record's cell, or None where there is none."""
        found: list[int | None] = []
        with self._sessions() as session:
            for record in records:
                found.append(session.scalars(select(Run.id).where(
                    *_same_cell(record.suite, record.method, params_key(record.method_params), record.seed),
                    Run.task == record.task, Run.status == "ok")).first())
        return found

    def save_hidden_scores(self, run_id: int, hidden_set: str, scores: list[ScoreRecord]) -> None:
        """A stored run's scores on hidden set `hidden_set`, replacing any stored for that set."""
        with self._sessions.begin() as session:
            session.execute(delete(HiddenScore).where(HiddenScore.run_id == run_id,
                                                      HiddenScore.hidden_set == hidden_set))
            session.add_all(HiddenScore(run_id=run_id, hidden_set=hidden_set, metric=s.metric, value=s.value,
                                        stderr=_finite_or_none(s.stderr), n_samples=s.n_samples,
                                        primary=s.primary) for s in scores)

    def count_runs(self) -> int:
        """All stored rows, ok and failed."""
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(Run)) or 0

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _save_one(self, session: Session, record: RunRecord, skip_stored: bool) -> bool:
        """Add one record to the session; False if it was left out (stored as ok, and skipping)."""
        key = params_key(record.method_params)
        # Autoflush makes earlier records of this batch visible here, so a cell twice in one
        # batch is caught too.
        cell = _same_cell(record.suite, record.method, key, record.seed)
        existing = session.scalars(select(Run).where(*cell, Run.task == record.task)).one_or_none()
        if existing is not None:
            if existing.status == "ok":
                if skip_stored:
                    return False
                raise DuplicateRunError(
                    f"{_cell_name(record)} is already stored as ok (run id {existing.id}); "
                    "nothing of this batch was saved. Skip cells listed by completed_cells()."
                )
            session.delete(existing)
            # The unit of work inserts before it deletes; flush now so the new row does not
            # collide with the failed one on the UNIQUE constraint.
            session.flush()
        session.add(_to_orm(record, key))
        return True


def _same_cell(suite: str, method: str, key: str, seed: int, table: type = Run) -> tuple[Any, ...]:
    return (table.suite == suite, table.method == method, table.params_key == key, table.seed == seed)


def _validate(record: RunRecord) -> None:
    """Catch what the database would report obscurely (or, for NaN in SQLite, as a NULL)."""
    if record.status not in STATUSES:
        raise ValueError(f"{_cell_name(record)}: status must be one of {STATUSES}, got {record.status!r}")
    for score in record.scores:
        if isinstance(score.value, float) and math.isnan(score.value):
            raise ValueError(f"{_cell_name(record)}: score {score.metric!r} is NaN")


def _finite_or_none(value: float | None) -> float | None:
    # lm-eval reports an unknown stderr as NaN or "N/A"; store both as NULL.
    if value is None or isinstance(value, str):
        return None
    return None if math.isnan(value) else float(value)


def _text(value: str | None) -> str | None:
    # PostgreSQL's text cannot hold NUL, which a generated program can print; one spelling on
    # every backend keeps a run's samples the same wherever it is stored.
    return value.replace("\x00", "\ufffd") if value is not None else None


def _to_orm(record: RunRecord, key: str) -> Run:
    return Run(
        suite=record.suite,
        method=record.method,
        method_params=json.loads(canonical_json(record.method_params)),
        params_key=key,
        task=record.task,
        seed=record.seed,
        status=record.status,
        error=_text(record.error),
        merge_seconds=record.merge_seconds,
        eval_seconds=record.eval_seconds,
        peak_memory_mb=record.peak_memory_mb,
        output_rank=record.output_rank,
        # An enum member (e.g. `Consumes`) is stored by value, not as 'Consumes.NOTHING'.
        consumes=record.consumes.value if isinstance(record.consumes, enum.Enum) else record.consumes,
        n_target_examples=record.n_target_examples,
        base_fingerprint=record.base_fingerprint,
        expert_fingerprints=dict(record.expert_fingerprints),
        provenance=record.provenance,
        spec=record.spec,
        scores=[Score(**asdict(s) | {"stderr": _finite_or_none(s.stderr)}) for s in record.scores],
        samples=[Sample(**asdict(s) | {k: _text(getattr(s, k)) for k in ("prompt", "generation", "target", "executed")})
                 for s in record.samples],
    )


def _cell_name(record: RunRecord) -> str:
    return f"(suite={record.suite}, method={record.method}, task={record.task}, seed={record.seed})"


SUBMISSION_TABLES = ("submissions", "submission_runs", "hidden_scores")


def has_submission_tables(connection: Connection | Engine) -> bool:
    """True when the database is at revision 0003 or later (it holds the three submission tables);
    readers of older databases, the release's reference results among them, skip those reads."""
    names = set(inspect(connection).get_table_names())
    return all(table in names for table in SUBMISSION_TABLES)


def check_writable(url: str) -> None:
    """Refuse (with a `UserError`) a database `open_store` would refuse, writing nothing: the CLI
    calls it before anything else, so that a bad --db is reported before any work and leaves no
    file behind even when another argument is bad too."""
    engine = database.open_engine(url, readonly=False)
    try:
        if engine.dialect.name != "sqlite" or Path(engine.url.database or "").exists():
            with engine.connect() as connection:
                state = schema_version.inspect_schema(connection)
            schema_version.refuse(state, database.shown(url), writing=True)
    finally:
        engine.dispose()


def open_store(url: str) -> Store:
    """Open the database behind `url` for writing: checked (see `benchmark.database`), its schema
    built if it has none, refused with a `UserError` if it is not at this code's schema revision."""
    engine = database.open_engine(url, readonly=False)
    try:
        schema_version.prepare_for_writing(engine, database.shown(url))
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


# ------------------------------------------------------------------------------------ provenance

_VERSIONED = ("torch", "transformers", "peft", "lm_eval", "datasets", "sqlalchemy")


def _version(distribution: str) -> str | None:
    # Read installed metadata instead of importing: importing torch to learn its version costs
    # seconds and is not what a provenance record should do.
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def collect_provenance() -> dict:
    """What produced a run: package versions, interpreter, machine, the code's git commit, and the
    isolation its model-written programs ran under (`sandbox.isolation_report`).

    `git_commit` and `git_dirty` are None when SoupBench is not running from a git checkout (for
    example when installed from a wheel); a dirty tree means the commit alone cannot rerun it.
    """
    from benchmark import __version__
    from benchmark.sandbox import isolation_report

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit is not None else None
    return {
        "packages": {name: _version(name) for name in _VERSIONED} | {"soupbench": __version__},
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "sandbox": isolation_report(),
    }
