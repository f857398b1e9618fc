"""The CLI end to end on a tiny budget: real pretraining, experts, merges, lm-eval and storage."""

from __future__ import annotations

import json
import sqlite3

from typer.testing import CliRunner

from benchmark import catalog
from benchmark.cli import app

runner = CliRunner()
METHODS = catalog.method_names(["math", "code"])
TASKS = ["math", "code", "math_code"]


def rows(db, query):
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_every_issue_method_is_registered():
    for name in ["base", "expert-math", "expert-code", "task_arithmetic", "cat_static", "cat", "data_mix",
                 "ties", "dare_linear", "dare_ties", "magnitude_prune", "svd", "lorahub"]:
        assert name in METHODS


def test_run_stores_every_cell_then_skips_them(tiny_suite_file, tmp_path):
    db = tmp_path / "runs.db"
    result = runner.invoke(app, ["run", "--suite", str(tiny_suite_file), "--db", str(db)])
    assert result.exit_code == 0, result.output
    stored = rows(db, "select method, task, seed, status from runs")
    assert sorted(stored) == sorted((m, t, 0, "ok") for m in METHODS for t in TASKS)
    # every run has its primary score in [0, 1] over exactly eval_size samples, and its samples
    for method, task, value, n, n_samples in rows(
        db, "select r.method, r.task, s.value, s.n_samples, (select count(*) from samples x where x.run_id = r.id) "
            "from runs r join scores s on s.run_id = r.id where s.\"primary\""):
        assert 0.0 <= value <= 1.0 and n == 6 and n_samples == 6, (method, task)
    provenance = json.loads(rows(db, "select provenance from runs limit 1")[0][0])
    assert provenance["packages"]["torch"] and "git_commit" in provenance
    spec = json.loads(rows(db, "select spec from runs where method = 'cat' limit 1")[0][0])
    assert spec["params"]["steps"] == 4 and spec["suite"]["name"] == "tiny"
    # CAT's learned weights are stored with its runs, and the method page's query reads them per
    # layer and module (the paper's one weight per expert per module)
    from benchmark.results import open_readonly
    from leaderboard.queries import learned_weights

    cat_runs = [i for (i,) in rows(db, "select id from runs where method = 'cat'")]
    reader = open_readonly(f"sqlite:///{db}")
    learned = learned_weights(reader, cat_runs)
    reader.close()
    info = json.loads(rows(db, f"select provenance from runs where id = {cat_runs[0]}")[0][0])["method_info"]
    assert set(learned["expert"]) == {"math", "code"} and learned["layer"].str.isdigit().all()
    assert len(learned) == 2 * len(info["module_weights"]) and learned["weight"].notna().all()
    # every method name appears in the printed table
    for method in METHODS:
        assert method in result.output

    again = runner.invoke(app, ["run", "--suite", str(tiny_suite_file), "--db", str(db)])
    assert again.exit_code == 0, again.output
    assert f"computed 0 cells, {3 * len(METHODS)} already stored" in again.output
    assert len(rows(db, "select id from runs")) == 3 * len(METHODS)

    as_json = runner.invoke(app, ["results", "--db", str(db), "--format", "json"])
    records = json.loads(as_json.stdout)
    primary = [r for r in records if r["primary"]]
    assert {(r["method"], r["task"]) for r in primary} == {(m, t) for m in METHODS for t in TASKS}
    assert all(r["n_seeds"] == 1 and r["ci_low"] <= r["mean"] <= r["ci_high"] for r in primary)


def test_more_seeds_compute_exactly_the_new_seeds_cells(tmp_path):
    """A one-seed database extended with --seeds 3: seeds 1 and 2 are computed, seed 0's cells are
    skipped (the rows stored first stay, untouched), and no cell is stored twice."""
    import yaml

    from tests.conftest import TINY_SUITE

    suite = tmp_path / "three-seeds.yaml"
    suite.write_text(yaml.safe_dump({**TINY_SUITE, "seeds": [0, 1, 2]}))
    db = tmp_path / "runs.db"
    grid = ["run", "--suite", str(suite), "--method", "base", "--task", "math", "--task", "code", "--db", str(db)]
    first = runner.invoke(app, grid + ["--seeds", "1"])
    assert first.exit_code == 0, first.output
    assert "computed 2 cells, 0 already stored" in first.output
    seed_zero = rows(db, "select id, task, created_at from runs where seed = 0 order by id")
    assert len(seed_zero) == 2

    more = runner.invoke(app, grid + ["--seeds", "3"])
    assert more.exit_code == 0, more.output
    assert "computed 4 cells, 2 already stored" in more.output
    assert sorted(rows(db, "select task, seed from runs")) == sorted(
        (t, s) for t in ("math", "code") for s in (0, 1, 2))
    assert rows(db, "select id, task, created_at from runs where seed = 0 order by id") == seed_zero
    # each seed's cells were made with that seed's experts (the row names them by fingerprint)
    fingerprints = {seed: json.loads(f)["math"] for seed, f in rows(
        db, "select seed, expert_fingerprints from runs where task = 'math'")}
    assert len(set(fingerprints.values())) == 3
