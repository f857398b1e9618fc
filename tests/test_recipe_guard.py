"""A suite name stands for one recipe in a database: an edited suite rerun into it is refused, a
suite that only gains seeds, tasks or method parameters is not."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest
import yaml
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.runner import RecipeChangedError, check_stored_base, check_stored_recipe
from benchmark.storage import open_store
from benchmark.suite import Suite
from tests.conftest import TINY_SUITE
from tests.test_storage import make_run


STORED_BASE = "sha256:" + "ab" * 32


def tiny(**changes) -> Suite:
    data = {**TINY_SUITE, **changes}
    return Suite.model_validate(data)


@pytest.fixture
def store_with_tiny(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    suite = tiny()
    run = dataclasses.replace(make_run(suite="tiny"), base_fingerprint=STORED_BASE,
                              spec={"suite": suite.model_dump(mode="json"), "task": "math_code"})
    store.save_runs([run])
    yield store
    store.close()


@pytest.fixture(autouse=True)
def on_cpu(monkeypatch):
    monkeypatch.setenv("SOUPBENCH_DEVICE", "cpu")


def test_same_recipe_passes_and_so_do_more_seeds_tasks_and_method_params(store_with_tiny):
    check_stored_recipe(tiny(), store_with_tiny)
    check_stored_recipe(tiny(seeds=[0, 1, 2, 3], tasks=["math"], description="edited",
                             method_params={"ties": {"density": 0.5}}), store_with_tiny)


def test_an_empty_database_or_another_suite_name_passes(tmp_path, store_with_tiny):
    empty = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    check_stored_recipe(tiny(base={**TINY_SUITE["base"], "hidden_size": 48}), empty)
    check_stored_recipe(tiny(name="tiny-wide", base={**TINY_SUITE["base"], "hidden_size": 48}), store_with_tiny)
    empty.close()


@pytest.mark.parametrize("changes, field", [
    ({"base": {**TINY_SUITE["base"], "hidden_size": 48}}, "base.hidden_size: 32 -> 48"),
    ({"expert": {**TINY_SUITE["expert"], "lr": 0.01}}, "expert.lr: 0.002 -> 0.01"),
    ({"task_options": {"math_code": {"digits": [2, 2]}}}, "task_options.math_code.digits: None -> [2, 2]"),
    ({"eval": {**TINY_SUITE["eval"], "max_gen_toks": 20}}, "eval.max_gen_toks: 12 -> 20"),
])
def test_a_changed_recipe_is_refused_and_the_message_names_the_field(store_with_tiny, changes, field):
    with pytest.raises(RecipeChangedError) as raised:
        check_stored_recipe(tiny(**changes), store_with_tiny)
    assert field in str(raised.value) and "another --db" in str(raised.value)


def test_cells_of_another_base_are_refused(store_with_tiny):
    check_stored_base(tiny(), store_with_tiny, STORED_BASE)
    other = "sha256:" + "cd" * 32
    with pytest.raises(RecipeChangedError, match="was run on base sha256:abab.*this run has base sha256:cdcd"):
        check_stored_base(tiny(), store_with_tiny, other)
    check_stored_base(tiny(name="tiny-2"), store_with_tiny, other)  # another suite name: its own base


def test_cli_refuses_an_edited_suite_and_stores_nothing(store_with_tiny, tmp_path):
    edited = {**TINY_SUITE, "base": {**TINY_SUITE["base"], "steps": 21}}
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(edited))
    db = str(store_with_tiny.url).removeprefix("sqlite:///")
    result = CliRunner().invoke(app, ["run", "--suite", str(path), "--db", db])
    assert result.exit_code != 0
    assert "base.steps: 20 -> 21" in result.output
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 1
