"""The write side of storage: schema round trip, cell identity, replacement rules, atomicity."""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

import benchmark
from benchmark import storage
from benchmark.errors import UserError
from benchmark.storage import (
    DuplicateRunError,
    Run,
    RunRecord,
    Sample,
    SampleRecord,
    Score,
    ScoreRecord,
    StorageError,
    collect_provenance,
    open_store,
    params_key,
    resolve_db_url,
)


def make_run(
    task: str = "math_code",
    seed: int = 0,
    method: str = "ties",
    params: dict | None = None,
    status: str = "ok",
    value: float | None = 0.5,
    suite: str = "micro",
) -> RunRecord:
    return RunRecord(
        suite=suite,
        method=method,
        method_params={"density": 0.2, "weights": [1.0, 1.0]} if params is None else params,
        task=task,
        seed=seed,
        scores=[
            # value=None is allowed here on purpose: it is how a test breaks a NOT NULL constraint.
            ScoreRecord("exact_match", value, 0.01, n_samples=100, primary=True),  # type: ignore[arg-type]
            ScoreRecord(metric="pass_rate", value=0.7, stderr=None, n_samples=100, primary=False),
        ],
        samples=[
            SampleRecord(0, "2+2?", "print(4)", "4", "4\n", True, {"latency": 0.1}),
            SampleRecord(1, "3+3?", "oops", "6", None, None, {}),
        ],
        merge_seconds=1.5,
        eval_seconds=3.0,
        peak_memory_mb=512.0,
        output_rank=16,
        consumes="nothing",
        n_target_examples=None,
        base_fingerprint="base-abc",
        expert_fingerprints={"math": "e1", "code": "e2"},
        provenance={"python": "3.11"},
        spec={"method": method, "task": task, "seed": seed},
        status=status,
        error="boom" if status == "failed" else None,
    )


@pytest.fixture
def db_url(any_db_url: str) -> str:
    """Every test of this file runs on SQLite and on PostgreSQL (see tests/conftest.py)."""
    return any_db_url


def count(store: storage.Store, table: type) -> int:
    with Session(store.engine) as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


# ---------------------------------------------------------------------------- identity and URLs


def test_params_key_is_order_independent_and_value_sensitive() -> None:
    assert params_key({"a": 1, "b": [1, 2]}) == params_key({"b": [1, 2], "a": 1})
    assert params_key({"a": 1}) != params_key({"a": 2})
    assert params_key({}) != params_key({"a": None})
    assert re.fullmatch(r"[0-9a-f]{16}", params_key({"a": 1}))


def test_params_key_refuses_values_without_a_stable_spelling() -> None:
    with pytest.raises(TypeError):
        params_key({"f": object()})
    with pytest.raises(ValueError):
        params_key({"x": float("nan")})


def test_resolve_db_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SOUPBENCH_DB", raising=False)
    assert resolve_db_url(None) == f"sqlite:///{tmp_path.resolve() / 'soupbench.db'}"
    monkeypatch.setenv("SOUPBENCH_DB", "postgresql://u@host/db")
    assert resolve_db_url(None) == "postgresql://u@host/db"
    assert resolve_db_url("sqlite:////elsewhere.db") == "sqlite:////elsewhere.db"
    # A bare path is made absolute, relative to the working directory.
    assert resolve_db_url("sub/x.db") == f"sqlite:///{tmp_path.resolve() / 'sub' / 'x.db'}"
    monkeypatch.setenv("SOUPBENCH_DB", "env.db")
    assert resolve_db_url(None) == f"sqlite:///{tmp_path.resolve() / 'env.db'}"
    monkeypatch.setenv("SOUPBENCH_DB", "")
    assert resolve_db_url(None).endswith("/soupbench.db")


def test_open_store_creates_file_and_enables_wal_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with open_store(f"sqlite:///{path}") as store:
        assert path.is_file()
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert set(sqlalchemy.inspect(store.engine).get_table_names()) >= {"runs", "scores", "samples", "cell_claims"}


def test_open_store_creates_no_folder(tmp_path: Path) -> None:
    # A typo in --db must not leave a tree of folders behind (it used to be created silently).
    with pytest.raises(UserError, match="folder .*nested/dir does not exist"):
        open_store(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'r.db'}")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ round trip


def test_round_trip_through_a_fresh_connection(db_url: str) -> None:
    first, second = make_run(seed=0), make_run(seed=1, task="manual_qa")
    with open_store(db_url) as store:
        store.save_runs([first, second])
    with open_store(db_url) as store, Session(store.engine) as session:
        assert store.count_runs() == 2
        run = session.scalars(select(Run).where(Run.seed == 0)).one()
        assert (run.suite, run.method, run.task, run.status, run.error) == ("micro", "ties", "math_code", "ok", None)
        assert run.method_params == {"density": 0.2, "weights": [1.0, 1.0]}
        assert run.params_key == params_key(first.method_params)
        assert (run.merge_seconds, run.eval_seconds, run.peak_memory_mb) == (1.5, 3.0, 512.0)
        assert (run.output_rank, run.consumes, run.n_target_examples) == (16, "nothing", None)
        assert run.base_fingerprint == "base-abc"
        assert run.expert_fingerprints == {"math": "e1", "code": "e2"}
        assert run.provenance == {"python": "3.11"}
        assert run.spec == first.spec
        assert run.created_at is not None
        scores = {s.metric: (s.value, s.stderr, s.n_samples, s.primary) for s in run.scores}
        assert scores == {"exact_match": (0.5, 0.01, 100, True), "pass_rate": (0.7, None, 100, False)}
        samples = sorted(run.samples, key=lambda s: s.doc_index)
        got = [(s.doc_index, s.prompt, s.generation, s.target, s.executed, s.correct, s.extra) for s in samples]
        assert got == [
            (0, "2+2?", "print(4)", "4", "4\n", True, {"latency": 0.1}),
            (1, "3+3?", "oops", "6", None, None, {}),
        ]


def test_enum_consumes_is_stored_by_value_and_nan_stderr_as_null(db_url: str) -> None:
    class Consumes(str, enum.Enum):
        SKILL_SAMPLE = "skill_sample"

    record = make_run()
    record.consumes = Consumes.SKILL_SAMPLE  # type: ignore[assignment]
    record.scores[0].stderr = float("nan")
    with open_store(db_url) as store:
        store.save_runs([record])
        with Session(store.engine) as session:
            run = session.scalars(select(Run)).one()
            assert run.consumes == "skill_sample"
            assert {s.metric: s.stderr for s in run.scores}["exact_match"] is None


# ------------------------------------------------------------------------ uniqueness and replace


def test_saving_an_ok_cell_twice_raises_and_keeps_one_row(db_url: str) -> None:
    # Chosen behaviour: a clear error, not a silent no-op (see Store.save_runs).
    with open_store(db_url) as store:
        store.save_runs([make_run()])
        with pytest.raises(DuplicateRunError, match="already stored as ok"):
            store.save_runs([make_run(value=0.9)])
        assert store.count_runs() == 1
        assert count(store, Score) == 2
        with Session(store.engine) as session:
            assert session.scalars(select(Score.value).where(Score.metric == "exact_match")).one() == 0.5


def test_same_cell_with_other_params_or_seed_is_a_different_cell(db_url: str) -> None:
    with open_store(db_url) as store:
        store.save_runs([make_run(), make_run(params={"density": 0.5}), make_run(seed=1)])
        assert store.count_runs() == 3


def test_failed_row_is_replaced_by_a_later_ok_row(db_url: str) -> None:
    with open_store(db_url) as store:
        store.save_runs([make_run(status="failed", value=0.0)])
        store.save_runs([make_run(value=0.8)])
        assert store.count_runs() == 1
        # The failed run's scores and samples went with it (foreign-key cascade).
        assert count(store, Score) == 2
        assert count(store, Sample) == 2
        with Session(store.engine) as session:
            run = session.scalars(select(Run)).one()
            assert (run.status, run.error) == ("ok", None)
            assert {s.metric: s.value for s in run.scores}["exact_match"] == 0.8


def test_an_ok_row_is_not_replaced_by_a_failed_one(db_url: str) -> None:
    with open_store(db_url) as store:
        store.save_runs([make_run()])
        with pytest.raises(DuplicateRunError):
            store.save_runs([make_run(status="failed")])
        assert store.completed_cells("micro", "ties", params_key(make_run().method_params), 0) == {"math_code"}


# ------------------------------------------------------------------------------------- atomicity


def test_batch_with_a_constraint_violation_stores_nothing(db_url: str) -> None:
    good, bad = make_run(task="math"), make_run(task="code", value=None)  # NOT NULL on scores.value
    with open_store(db_url) as store:
        with pytest.raises(StorageError, match="nothing was saved") as caught:
            store.save_runs([good, bad])
        assert not isinstance(caught.value, DuplicateRunError)
        assert (store.count_runs(), count(store, Score), count(store, Sample)) == (0, 0, 0)


def test_batch_holding_one_cell_twice_stores_nothing(db_url: str) -> None:
    with open_store(db_url) as store:
        with pytest.raises(DuplicateRunError):
            store.save_runs([make_run(task="math"), make_run(task="code"), make_run(task="math")])
        assert store.count_runs() == 0


def test_batch_replacing_a_failed_row_keeps_it_when_the_batch_fails(db_url: str) -> None:
    with open_store(db_url) as store:
        store.save_runs([make_run(status="failed")])
        with pytest.raises(StorageError):
            store.save_runs([make_run(), make_run(task="code", value=None)])
        with Session(store.engine) as session:
            assert session.scalars(select(Run.status)).all() == ["failed"]
        assert count(store, Score) == 2


def test_invalid_status_is_refused_before_touching_the_database(db_url: str) -> None:
    with open_store(db_url) as store:
        with pytest.raises(ValueError, match="status"):
            store.save_runs([make_run(task="math"), make_run(status="done")])
        assert store.count_runs() == 0


# ------------------------------------------------------------------------------ completed cells


def test_completed_cells_lists_ok_tasks_of_exactly_that_cell(db_url: str) -> None:
    key = params_key(make_run().method_params)
    with open_store(db_url) as store:
        store.save_runs(
            [
                make_run(task="math"),
                make_run(task="code"),
                make_run(task="math_code", status="failed"),
                make_run(task="manual_qa", seed=1),
                make_run(task="qa", params={"density": 0.9}),
                make_run(task="other", method="cat"),
                make_run(task="elsewhere", suite="paper"),
            ]
        )
        assert store.completed_cells("micro", "ties", key, 0) == {"math", "code"}
        assert store.completed_cells("micro", "ties", key, 1) == {"manual_qa"}
        assert store.completed_cells("micro", "ties", params_key({"density": 0.9}), 0) == {"qa"}
        assert store.completed_cells("micro", "ties", key, 7) == set()


# ------------------------------------------------------------------------------------ provenance


def test_collect_provenance_records_versions_and_commit() -> None:
    info = collect_provenance()
    assert info["packages"]["soupbench"] == benchmark.__version__
    assert info["packages"]["sqlalchemy"] == sqlalchemy.__version__
    assert set(info["packages"]) >= {"torch", "transformers", "peft", "lm_eval", "datasets"}
    assert {"python", "platform", "hostname", "git_commit", "git_dirty"} <= set(info)
    if info["git_commit"] is not None:
        assert re.fullmatch(r"[0-9a-f]{40}", info["git_commit"])
        assert isinstance(info["git_dirty"], bool)


def test_collect_provenance_without_git_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "_git", lambda *args: None)
    info = collect_provenance()
    assert info["git_commit"] is None and info["git_dirty"] is None
