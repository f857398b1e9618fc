"""`soupbench leaderboard`, the submission guide (README and site share one text), and CI's setup."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmark import catalog
from benchmark.cli import app
from benchmark.registry import Registry
from benchmark.storage import open_store
from leaderboard import serve

REPO = Path(__file__).resolve().parent.parent
SUBMIT = REPO / "leaderboard" / "submit.md"


def test_readme_section_is_the_submit_page_text() -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Submitting a method\n\n" + SUBMIT.read_text() in readme


def test_the_submit_example_is_a_working_method(tmp_path) -> None:
    """The example a newcomer copies must register and merge as the text says."""
    code = re.search(r"```python\n(.*?)```", SUBMIT.read_text(), re.S).group(1)
    path = tmp_path / "my_method.py"
    path.write_text(code)
    registry: Registry = Registry("method")
    (cls,) = catalog.load_method_file(path, into=registry)
    assert cls.name == "scaled_average" and cls.family == "linear" and cls.paper.startswith("https://")
    assert f"--method {cls.name}" in SUBMIT.read_text()
    deltas = [torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    merged = cls(scale=2.0).merge_module(deltas, torch.Generator())
    assert torch.allclose(merged, 2.0 * (deltas[0] + deltas[1] + deltas[2]) / 3)


def test_leaderboard_refuses_a_missing_database(tmp_path) -> None:
    missing = tmp_path / "nope.db"
    result = CliRunner().invoke(app, ["leaderboard", "--db", str(missing)])
    assert result.exit_code == 2
    assert "no results database" in result.output and not missing.exists()


def test_leaderboard_refuses_a_file_without_runs(tmp_path) -> None:
    empty = tmp_path / "other.db"
    empty.write_bytes(b"")
    result = CliRunner().invoke(app, ["leaderboard", "--db", str(empty)])
    assert result.exit_code == 2 and "no SoupBench runs table" in result.output


def test_leaderboard_serves_the_resolved_url(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    open_store(f"sqlite:///{tmp_path / 'results.db'}").close()
    served = []
    monkeypatch.setattr(serve, "serve", lambda url, port, source=None: served.append((url, port, source)))
    result = CliRunner().invoke(app, ["leaderboard", "--db", "results.db", "--port", "8642", "--no-reference"])
    assert result.exit_code == 0, result.output
    assert served == [(f"sqlite:///{tmp_path / 'results.db'}", 8642, None)]


def test_leaderboard_shows_a_users_database_beside_the_reference(tmp_path, monkeypatch) -> None:
    from leaderboard_fixtures import METHODS, fill_grid, write_reference_release

    release = tmp_path / "release"
    release.mkdir()
    fill_grid(f"sqlite:///{release / 'reference.db'}", methods=METHODS[:3], with_failed=False)
    write_reference_release(release)
    fill_grid(f"sqlite:///{tmp_path / 'mine.db'}", methods=METHODS[3:4], with_failed=False)
    monkeypatch.setenv("SOUPBENCH_RELEASE", str(release))
    monkeypatch.chdir(tmp_path)
    served = []
    monkeypatch.setattr(serve, "serve", lambda url, port, source=None: served.append((url, source)))
    result = CliRunner().invoke(app, ["leaderboard", "--db", "mine.db"])
    assert result.exit_code == 0, result.output
    ((url, source),) = served
    assert url != f"sqlite:///{tmp_path / 'mine.db'}" and "with 9 runs of your own" in source
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        methods = {m for (m,) in conn.execute("select distinct method from runs")}
    assert methods == {m.name for m in METHODS[:4]}


def test_streamlit_command_line() -> None:
    argv = serve.streamlit_argv("sqlite:////data/r.db", 8642)
    assert argv[:3] == ["streamlit", "run", str(REPO / "leaderboard" / "app.py")]
    options = dict(zip(argv[3:argv.index("--"):2], argv[4:argv.index("--"):2]))
    assert options["--server.port"] == "8642" and options["--server.headless"] == "true"
    assert options["--client.toolbarMode"] == "viewer"  # no Deploy button on a public board
    assert argv[argv.index("--") + 1:] == ["--db", "sqlite:////data/r.db"]


def test_ci_installs_chromium_and_playwright() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.index("apt-get install -y -qq chromium") < ci.index("pytest")
    pyproject = (REPO / "pyproject.toml").read_text()
    test_extra = re.search(r"^test = \[(.*?)\]", pyproject, re.S | re.M).group(1)
    assert "playwright" in test_extra


@pytest.mark.parametrize("page", ["overview", "task", "method", "compare", "plots", "submit"])
def test_every_page_file_exists_and_is_short(page: str) -> None:
    source = (REPO / "leaderboard" / "views" / f"{page}.py").read_text()
    assert len(source.splitlines()) < 300 and source.startswith('"""')
