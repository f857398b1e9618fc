"""Shared fixtures: a tiny suite (the micro suite at test budgets), an isolated cache, and the
databases storage tests run against (SQLite, and PostgreSQL on a throwaway server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

TINY_SUITE = {
    "name": "tiny",
    "description": "micro at test budgets",
    "base": {"kind": "micro", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
             "num_layers": 1, "num_heads": 2, "max_positions": 128, "corpus_documents": 600,
             "steps": 20, "batch_size": 8, "seq_len": 64, "warmup_steps": 2},
    "skills": [{"name": "math", "train_size": 64, "eval_size": 6},
               {"name": "code", "train_size": 64, "eval_size": 6}],
    "tasks": ["math", "code", "math_code"],
    "expert": {"rank": 4, "alpha": 8, "steps": 6, "batch_size": 8, "warmup_steps": 1},
    "eval": {"batch_size": 8, "max_gen_toks": 12},
    "seeds": [0, 1],
    "method_params": {"cat": {"steps": 4, "sample_fraction": 0.25}, "data_mix": {"epochs_factor": 0.5},
                      "lorahub": {"budget": 3, "n_examples": 2}},
}


def build_tiny_release(root: Path, methods: list[str]) -> Path:
    """The tiny suite released into `root / "release"` (built in `root`'s own cache, on the CPU) with
    the reference results of `methods`: what a module-scoped release fixture builds once."""
    from benchmark.release_build import build_release
    from benchmark.suite import Suite

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOUPBENCH_CACHE", str(root / "build-cache"))
        patch.setenv("SOUPBENCH_DEVICE", "cpu")
        build_release(Suite.model_validate(TINY_SUITE), root / "release", methods=methods)
    return root / "release"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test builds into its own session cache, never the user's."""
    monkeypatch.setenv("SOUPBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on one torch thread (see tests.lora_fixtures.one_thread): modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    from tests.lora_fixtures import one_thread

    with one_thread():
        yield


@pytest.fixture
def tiny_suite_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SUITE))
    return path


def _postgres_required() -> bool:
    """In CI a missing PostgreSQL server fails its tests (.ci/run installs one); elsewhere they skip."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("SOUPBENCH_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL cluster for the session (tests/pg_server.py); each test gets its own database."""
    from tests.pg_server import PostgresServer, find_bindir

    bindir = find_bindir()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        bindir = None
    if bindir is None:
        message = ("no PostgreSQL server binaries (initdb, pg_ctl) or no psycopg driver: install Debian's "
                   "postgresql package and soupbench[test]")
        if _postgres_required():
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request, tmp_path) -> str:
    """An empty database of each backend SoupBench supports: storage tests run on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("pg_url")
