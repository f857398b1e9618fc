"""The leaderboard's numbers without a browser: aggregation, ranks, gains, bootstrap, metadata.

Expected values are computed here from the raw per-seed scores the fixture stored, with printed
t-table quantiles and hand-written formulas, never with the code under test.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.results import open_readonly
from benchmark.storage import ScoreRecord, open_store
from leaderboard import provenance, queries, ranking, snapshot, stats
from leaderboard.method_info import method_info
from leaderboard_fixtures import (CATEGORIES, HIDDEN_SET, METHODS, SEEDS, SUBMISSION_SEEDS, TASKS, WEAK, MethodSpec,
                                  add_submission, fill_grid, fill_submissions, hand_hidden_average, make_runs, soup)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('lb') / 'grid.db'}"
    return fill_grid(url)


@pytest.fixture(scope="module")
def cells(grid) -> pd.DataFrame:
    reader = open_readonly(grid.url)
    runs, scores = queries.load_runs(reader, grid.suite), queries.load_scores(reader, grid.suite)
    reader.close()
    return queries.aggregate(queries.primary_scores(runs, scores))


def expected_cell(grid, method: str, task: str) -> tuple[float, float]:
    """(mean, 95% half-width) over seeds, by hand."""
    return grid.cell(method, task)


def test_cells_match_hand_computed_means_and_intervals(grid, cells) -> None:
    assert len(cells) == len(METHODS) * len(TASKS)  # the failed svd run is nowhere
    for row in cells.itertuples():
        mean, half = expected_cell(grid, row.method, row.task)
        assert row.mean == pytest.approx(mean, abs=1e-12)
        assert row.half_width == pytest.approx(half, abs=1e-9)
        assert (row.ci_low, row.ci_high) == pytest.approx(grid.bounds(row.method, row.task)[1:], abs=1e-9)
        assert 0 <= row.ci_low < row.mean < row.ci_high <= 1
        assert row.n_seeds == 3 and row.seeds == SEEDS
        assert row.metric == {"math": "exact_match"}.get(row.task, "exec_accuracy")


def test_accuracy_by_category_matches_hand_counts(grid) -> None:
    reader = open_readonly(grid.url)
    runs = queries.load_runs(reader, grid.suite)
    table = queries.category_table(reader.category_counts(grid.suite, "math_code"), runs)
    assert sorted(table.columns) == sorted(CATEGORIES) and sorted(table.index) == sorted(m.name for m in METHODS)
    for method in table.index:
        for category in CATEGORIES:
            assert table.loc[method, category] == pytest.approx(grid.category_accuracy(method, category), abs=1e-12)
    # samples without a category (the other tasks) give no table; the failed run counts nowhere
    assert queries.category_table(reader.category_counts(grid.suite, "math"), runs).empty
    counts = reader.category_counts(grid.suite, "math_code")
    assert {c.n for c in counts} == {len(range(k, 100, 4)) for k in range(4)} and len(counts) == 4 * 3 * len(METHODS)
    reader.close()


def test_cells_agree_with_the_results_command(grid, cells) -> None:
    """The leaderboard and `soupbench results` must never disagree on a number."""
    reader = open_readonly(grid.url)
    records = {(r.method, r.task): r for r in reader.records(grid.suite) if r.primary}
    reader.close()
    assert len(records) == len(cells)
    for row in cells.itertuples():
        record = records[(row.method, row.task)]
        assert (row.mean, row.ci_low, row.ci_high) == pytest.approx(
            (record.mean, record.ci_low, record.ci_high), abs=1e-12)
        assert row.merge_seconds == pytest.approx(record.merge_seconds)


def test_single_seed_interval_uses_the_runs_stderr(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    fill_grid(url, seeds=(0,), methods=METHODS[:2], with_failed=False)
    reader = open_readonly(url)
    runs, scores = queries.load_runs(reader, "micro"), queries.load_scores(reader, "micro")
    records = {(r.method, r.task): r for r in reader.records("micro") if r.primary}
    reader.close()
    for row in queries.aggregate(queries.primary_scores(runs, scores)).itertuples():
        assert (row.ci_low, row.ci_high) == pytest.approx(
            (records[(row.method, row.task)].ci_low, records[(row.method, row.task)].ci_high), abs=1e-12)
        assert row.half_width > 0


def test_overview_ranks_average_gain_and_retention(grid, cells) -> None:
    ov = ranking.overview(cells)
    means = {(m.name, t): expected_cell(grid, m.name, t)[0] for m in METHODS for t in TASKS}
    average = {m.name: statistics.fmean(means[(m.name, t)] for t in TASKS) for m in METHODS}
    by_average = sorted(average, key=lambda m: -average[m])
    assert list(ov.table["method"]) == by_average
    assert list(ov.table["rank"]) == list(range(1, len(METHODS) + 1))
    assert ov.tasks == ["math_code", "code", "math"]  # the composite task leads
    for method in average:
        row = ov.table.loc[method]
        assert row["average"] == pytest.approx(average[method])
        best_expert = max(means[("expert-math", "math_code")], means[("expert-code", "math_code")])
        assert row["composition gain"] == pytest.approx(means[(method, "math_code")] - best_expert)
        retention = (means[(method, "math")] / means[("expert-math", "math")]
                     + means[(method, "code")] / means[("expert-code", "code")]) / 2
        assert row["retention"] == pytest.approx(retention)
        for task in TASKS:
            better = sum(means[(m.name, task)] > means[(method, task)] + 1e-12 for m in METHODS)
            assert ov.task_rank.at[method, task] == better + 1
    assert ov.best["math_code"].sum() == 1 and ov.best.at["cat", "math_code"]
    cheapest_merge = min((grid.merge_seconds[m.name], m.name) for m in METHODS[3:])[1]
    assert list(ov.best.index[ov.best["merge s"]]) == [cheapest_merge]


def test_filters_keep_gain_relative_to_hidden_experts(cells) -> None:
    full = ranking.overview(cells)
    merges = ranking.overview(cells, families=["linear", "sparsified", "concatenation", "data"])
    assert set(merges.table["method"]) == {"task_arithmetic", "ties", "cat", "data_mix", "lorahub"}
    assert list(merges.table["rank"]) == [1, 2, 3, 4, 5]
    for method in merges.table.index:
        assert merges.table.at[method, "composition gain"] == pytest.approx(full.table.at[method, "composition gain"])
    only_data = ranking.overview(cells, consumes=["skill_sample", "skill_data"])
    assert set(only_data.table["method"]) == {"cat", "data_mix"}


def test_sorting_by_a_column_keeps_each_rows_numbers(cells) -> None:
    by_cost = ranking.overview(cells, sort_by="merge s")
    assert list(by_cost.table["merge s"]) == sorted(by_cost.table["merge s"])
    by_code = ranking.overview(cells, sort_by="code")
    assert list(by_code.table["code"]) == sorted(by_code.table["code"], reverse=True)
    assert by_code.table.loc["cat", "rank"] == ranking.overview(cells).table.loc["cat", "rank"]


def test_ties_share_the_better_rank() -> None:
    ranks = ranking.descending_rank(pd.Series([0.5, 0.7, 0.5, 0.1 + 0.2, 0.3]))
    assert list(ranks) == [2, 1, 2, 4, 4]  # 0.1 + 0.2 != 0.3 in floats, yet they tie


def test_several_parameter_settings_get_their_own_rows(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'settings.db'}"
    ties = METHODS[4]
    other = MethodSpec(ties.name, ties.class_path, ties.consumes, ties.quality, 2.0, 400, 64, {"density": 0.5})
    with open_store(url) as store:
        store.save_runs(list(make_runs(methods=(ties, other), seeds=(0, 1), n_docs=10)))
    reader = open_readonly(url)
    runs = queries.load_runs(reader, "micro")
    reader.close()
    assert set(runs["label"]) == {"ties [density=0.2, majority_sign_method=total]", "ties [density=0.5]"}


def test_pareto_front() -> None:
    points = pd.DataFrame({"cost": [0.0, 1.0, 2.0, 3.0, 5.0], "score": [0.1, 0.5, 0.4, 0.6, 0.6]})
    assert list(ranking.pareto_front(points, "cost", "score").index) == [0, 1, 3]


def test_paired_bootstrap_matches_a_naive_index_bootstrap() -> None:
    rng = np.random.default_rng(7)
    a = (rng.random(300) < 0.45).astype(float)
    # Correlated, as two merges of the same experts: b loses some of a's right answers, gains a few.
    b = np.where((a == 1) & (rng.random(300) < 0.3), 0.0, np.where(rng.random(300) < 0.05, 1.0, a))
    result = stats.paired_bootstrap(a, b)
    naive = (a - b)[np.random.default_rng(99).integers(0, 300, size=(10_000, 300))].mean(axis=1)
    low, high = np.quantile(naive, [0.025, 0.975])
    assert result.difference == pytest.approx(a.mean() - b.mean())
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=0.01)
    assert result.significant and low > 0
    assert stats.paired_bootstrap(a, b) == result  # fixed seed: same answer every time


def test_paired_bootstrap_significance_and_errors() -> None:
    same = np.array([1.0, 0.0, 1.0, 1.0])
    result = stats.paired_bootstrap(same, same)
    assert (result.difference, result.ci_low, result.ci_high, result.p_value) == (0, 0, 0, 1.0)
    assert not result.significant
    clear = stats.paired_bootstrap(np.ones(200), np.zeros(200))
    assert clear.significant and clear.p_value == 0.0
    with pytest.raises(ValueError, match="no paired items"):
        stats.paired_bootstrap(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        stats.paired_bootstrap(np.ones(3), np.ones(4))


def test_pair_items_uses_only_items_both_scored() -> None:
    a = {(0, 0): True, (0, 1): False, (0, 2): None, (1, 0): True}
    b = {(0, 0): False, (0, 1): False, (0, 2): True, (2, 0): True}
    left, right = stats.pair_items(a, b)
    assert list(left) == [1.0, 0.0] and list(right) == [0.0, 0.0]


def test_method_info_reads_the_source_and_falls_back() -> None:
    cat = method_info("methods.cat.Cat")
    assert cat.found and cat.family == "concatenation" and "arxiv.org" in cat.paper and cat.description
    assert method_info("methods.dare_ties.DareTies").family == "sparsified"
    missing = method_info("some_uninstalled_plugin.module.Method")
    assert not missing.found and missing.family == "other" and missing.description == ""
    assert method_info(None).family == "other"


def test_the_card_a_run_stored_wins_over_the_installed_source() -> None:
    """A plugin's row keeps describing itself when its code is gone, and a row made by older code is
    described as it said then, not as the installed source says now."""
    from leaderboard.method_info import describe

    card = {"description": "Averages, balanced.", "paper": "https://example.org/p", "family": "linear"}
    shown = describe({"method_class": "some_uninstalled_plugin.module.Method", "card": card})
    assert (shown.description, shown.paper, shown.family, shown.found) == (
        "Averages, balanced.", "https://example.org/p", "linear", True)
    assert describe({"method_class": "methods.cat.Cat", "card": {**card, "family": "data"}}).family == "data"
    assert describe({"method_class": "methods.cat.Cat"}).family == "concatenation"  # a row from before cards
    assert describe(None).family == "other"


def test_sandbox_isolation_counts_each_runs_stored_report(grid, tmp_path) -> None:
    reader = open_readonly(grid.url)
    runs = queries.load_runs(reader, grid.suite)
    ids = [int(i) for i in runs.loc[runs["method"].isin(["cat", "data_mix"]) & (runs["task"] == "code"), "run_id"]]
    table = queries.sandbox_isolation(reader, ids)
    reader.close()
    assert table.values.tolist() == [["strong", "bubblewrap 0.8.0", len(SEEDS)],
                                     ["weak", WEAK["backend"], len(SEEDS)]]
    old = f"sqlite:///{tmp_path / 'old.db'}"  # runs stored before the isolation was recorded
    store = open_store(old)
    store.save_runs([replace(r, provenance={"python": "3.11"}) for r in make_runs(methods=METHODS[:1], tasks=("code",),
                                                                                   seeds=(0,), n_docs=3)])
    store.close()
    reader = open_readonly(old)
    assert queries.sandbox_isolation(reader, [1]).values.tolist() == [["not recorded", "", 1]]
    reader.close()
    assert queries.task_meta("math_code").executes_programs and not queries.task_meta("math").executes_programs


def test_consumption_labels_cover_every_kind() -> None:
    from benchmark.method import Consumes

    assert {c.value for c in Consumes} == set(queries.CONSUMES_LABELS)


def test_the_site_never_imports_methods_or_torch(grid) -> None:
    """STYLE 8: the leaderboard reads a query layer, never the engine (and stays fast to start)."""
    code = (
        "import os, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(REPO / 'leaderboard' / 'app.py')!r}, default_timeout=60).run()\n"
        "for page in ('task', 'method', 'compare', 'plots', 'submit'):\n"
        "    at.switch_page(f'views/{page}.py').run()\n"
        "    assert not at.exception, at.exception\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.split('.')[0] in ('methods', 'peft'))\n"
        "bad += [m for m in ('benchmark.training', 'benchmark.runner', 'benchmark.catalog') if m in sys.modules]\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SOUPBENCH_DB": grid.url})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------ where a row came from (0003)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A board with three submissions (see `fill_submissions`); its frames as `snapshot` loads them."""
    url = f"sqlite:///{tmp_path_factory.mktemp('subs') / 'subs.db'}"
    submitted = fill_submissions(url)
    return url, submitted, snapshot.suite_frames(url, "micro")


def test_each_row_says_where_it_came_from(board) -> None:
    _, submitted, data = board
    sources = provenance.row_sources(data.runs, data.origins, data.hidden)
    n = submitted["soup_a"].compared
    assert n == len(TASKS) * len(SUBMISSION_SEEDS) * 20
    assert sources.to_dict() == {
        "base": "built in", "expert-math": "built in", "expert-code": "built in", "task_arithmetic": "built in",
        "soup_a": f"submitted by Ada Lovelace: reproduced ({n}/{n} samples), scored on the hidden set",
        "soup_b": "submitted by Bob Builder: imported, not verified",
        "soup_c": f"submitted by Cy Young: not reproduced ({n * 9 // 10}/{n} samples)",
    }
    ids = [int(i) for i in data.runs.loc[data.runs["method"] == "soup_b", "run_id"]]
    (row,) = provenance.submissions_of(data.origins, ids).itertuples()
    assert (row.submitter, row.contact, row.bundle_sha256) == ("Bob Builder", "bob.builder@example.org",
                                                               submitted["soup_b"].bundle_sha256)
    assert provenance.day(row.created_at) == "2026-11-28" and row.method_file == "soup_b.py"
    assert provenance.submissions_of(data.origins, [int(data.runs["run_id"].iloc[0])]).empty  # base: built in
    file, source = provenance.method_source(snapshot.reader(board[0]), int(row.submission_id))
    assert file == "soup_b.py" and 'name = "soup_b"' in source


def test_verified_rows_are_the_built_in_ones_and_the_reproduced_submissions(board) -> None:
    _, _, data = board
    kept = data.runs[provenance.verified_runs(data.runs, data.origins)]
    assert set(kept["method"]) == {"base", "expert-math", "expert-code", "task_arithmetic", "soup_a"}
    assert len(kept) == 5 * len(TASKS) * len(SUBMISSION_SEEDS)  # whole methods: no run of soup_a is lost


def test_hidden_scores_are_averaged_like_the_public_ones(board) -> None:
    _, submitted, data = board
    metric_of = queries.primary_metric_of(data.scores, data.runs)
    average = provenance.hidden_average(data.runs, data.hidden, metric_of, list(TASKS))
    assert average.to_dict() == pytest.approx({"soup_a": hand_hidden_average(submitted["soup_a"])})
    a = submitted["soup_a"]
    ok = data.runs[data.runs["method"] == "soup_a"]
    both = provenance.side_by_side(ok, queries.primary_scores(ok, data.scores), data.hidden, metric_of)
    assert len(both) == len(TASKS) and set(both["hidden_set"]) == {HIDDEN_SET}
    for row in both.itertuples():
        public = statistics.fmean(a.public[(row.task, s)] for s in SUBMISSION_SEEDS)
        hidden = statistics.fmean(a.hidden[(row.task, s)] for s in SUBMISSION_SEEDS)
        assert (row.public, row.hidden, row.difference) == pytest.approx((public, hidden, hidden - public))
        assert row.metric == {"math": "exact_match"}.get(row.task, "exec_accuracy") and row.n_seeds == 2
        assert row.hidden != pytest.approx(row.public)  # the hidden set is not the public one


def test_a_built_in_row_scored_on_part_of_a_new_hidden_set(tmp_path) -> None:
    """Built-in rows can be scored too; the overview shows a label's newest set, averaged over every
    task shown, so a set that covers only some tasks gives no average."""
    url = f"sqlite:///{tmp_path / 'built.db'}"
    fill_submissions(url, n_docs=5)
    with open_store(url) as store:
        math_run = next(r for r in make_runs(methods=METHODS[3:4], seeds=(0,), n_docs=5) if r.task == "math")
        (run_id,) = store.run_ids([math_run])
        store.save_hidden_scores(run_id, "hidden-other", [ScoreRecord("exact_match", 0.125, None, 5, True)])
        soup_runs = list(make_runs(methods=(soup("soup_a", .55),), seeds=SUBMISSION_SEEDS, n_docs=5))
        for record, soup_id in zip(soup_runs, store.run_ids(soup_runs)):  # a newer set for soup_a
            store.save_hidden_scores(soup_id, "hidden-newer", [ScoreRecord(record.scores[0].metric, 0.9, None, 5, True)])
    data = snapshot.suite_frames(url, "micro")
    assert provenance.row_sources(data.runs, data.origins, data.hidden)["task_arithmetic"] == \
        "built in, scored on the hidden set"
    metric_of = queries.primary_metric_of(data.scores, data.runs)
    average = provenance.hidden_average(data.runs, data.hidden, metric_of, list(TASKS))
    assert average["soup_a"] == pytest.approx(0.9)  # the newer set, not HIDDEN_SET
    assert pd.isna(average["task_arithmetic"])  # scored on math only
    ok = data.runs[data.runs["method"] == "task_arithmetic"]
    both = provenance.side_by_side(ok, queries.primary_scores(ok, data.scores), data.hidden, metric_of)
    assert both[["task", "hidden_set", "hidden", "n_seeds"]].values.tolist() == [["math", "hidden-other", 0.125, 1]]


def test_verifying_a_bundle_reloads_the_board_though_no_run_changed(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'later.db'}"
    fill_grid(url, methods=METHODS[:1], seeds=(0,), n_docs=5, with_failed=False)
    b = add_submission(url, soup("soup_b", .6), "Bob", seeds=(0,), n_docs=5)
    before = snapshot.suite_frames(url, "micro")
    assert set(before.origins["state"]) == {"imported"}
    assert snapshot.suite_frames(url, "micro") is before  # nothing changed: the cached frames
    with open_store(url) as store:
        store.record_verification(b.bundle_sha256, 15, 15, {})
    after = snapshot.suite_frames(url, "micro")
    assert after.version != before.version and set(after.origins["state"]) == {"reproduced"}
    with open_store(url) as store:
        (run_id, *_) = store.run_ids(list(make_runs(methods=(soup("soup_b", .6),), seeds=(0,), n_docs=5)))
        store.save_hidden_scores(run_id, HIDDEN_SET, [ScoreRecord("exact_match", 0.5, None, 5, True)])
    assert len(snapshot.suite_frames(url, "micro").hidden) == 1


def test_a_database_made_before_submissions_reads_as_all_built_in(tmp_path) -> None:
    """The release's reference results (made before schema 0003): no new tables, nothing breaks."""
    from benchmark.release import reference_db_url

    url = reference_db_url()
    with snapshot.reader(url).engine.connect() as connection:
        assert not provenance.has_submission_tables(connection) and provenance.version(connection) == ()
    data = snapshot.suite_frames(url, "micro")
    assert data.origins.empty and list(data.origins.columns) == provenance.ORIGIN_COLUMNS
    assert data.hidden.empty and list(data.hidden.columns) == provenance.HIDDEN_COLUMNS
    assert set(provenance.row_sources(data.runs, data.origins, data.hidden)) == {"built in"}
    assert provenance.verified_runs(data.runs, data.origins).all()
    assert provenance.method_source(snapshot.reader(url), 1) is None
    metric_of = queries.primary_metric_of(data.scores, data.runs)
    assert provenance.hidden_average(data.runs, data.hidden, metric_of, ["math"]).empty


def test_overview_puts_source_and_hidden_beside_the_public_numbers(board) -> None:
    _, submitted, data = board
    sources = provenance.row_sources(data.runs, data.origins, data.hidden)
    hidden = pd.Series({"soup_a": 0.4, "soup_b": 0.7})
    ov = ranking.overview(data.cells, sources=sources, hidden=hidden, sort_by="hidden")
    assert list(ov.table.columns[:3]) == ["rank", "method", "source"]
    assert list(ov.table.index[:2]) == ["soup_b", "soup_a"] and ov.table["hidden"].isna().sum() == 5
    assert list(ov.best.index[ov.best["hidden"]]) == ["soup_b"]
    columns = list(ov.table.columns)
    assert columns.index("hidden") == columns.index("average") + 1
    built = ranking.overview(data.cells, families=["baseline"], sources=sources, hidden=hidden, sort_by="hidden")
    assert "hidden" not in built.table and list(built.table["rank"]) == [1, 2, 3]  # no hidden row shown: by rank
    assert set(built.table["source"]) == {"built in"}
