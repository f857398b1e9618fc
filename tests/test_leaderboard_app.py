"""Every page of the site through `streamlit.testing.v1.AppTest`, on a database this file fills.

The numbers checked are the ones a visitor reads (the tables' display text), against values the
test computes by hand from the raw scores the fixture stored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from html.parser import HTMLParser
import pytest
from streamlit.testing.v1 import AppTest

from benchmark.storage import open_store
from leaderboard_fixtures import (CAT_MODULES, CATEGORIES, HIDDEN_SET, METHODS, SEEDS, SOUP_SOURCE, SUBMISSION_SEEDS,
                                  TASKS, competition_rank, fill_grid, fill_submissions, hand_hidden_average)

APP = Path(__file__).resolve().parent.parent / "leaderboard" / "app.py"
HUB = {"kind": "hub", "model_id": "meta-llama/Llama-2-7b-hf"}
MERGES = ["task_arithmetic", "ties", "cat", "data_mix", "lorahub"]


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    """Suite micro (3 seeds, one failed run), and suite mixed: two base models in one suite."""
    path = tmp_path_factory.mktemp("site") / "results.db"
    fill_grid(f"sqlite:///{path}")
    fill_grid(f"sqlite:///{path}", suite="mixed", seeds=(0, 1), base=HUB, with_failed=False)
    fill_grid(f"sqlite:///{path}", suite="mixed", seeds=(5, 6, 7), with_failed=False)
    return path


@pytest.fixture(scope="module")
def grid(db):
    """The raw numbers of suite micro (same deterministic outcomes as stored in `db`)."""
    return fill_grid(f"sqlite:///{db.parent / 'copy.db'}")


def start(url: str, monkeypatch, page: str | None = None, **params: str) -> AppTest:
    monkeypatch.setenv("SOUPBENCH_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(params)
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


class _Board(HTMLParser):
    """Reads the overview's HTML table back into header names, cell texts and best-cell marks."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.best: set[tuple[int, int]] = set()
        self.links: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
            if "best" in (attrs.get("class") or "").split():
                self.best.add((len(self.rows) - 2, len(self.rows[-1])))
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None


def board(at: AppTest) -> tuple[pd.DataFrame, _Board]:
    """The overview table as a visitor reads it (row 0 of the frame is the first method)."""
    parser = _Board()
    parser.feed(at.get("html")[0].proto.body)
    header, *rows = parser.rows
    return pd.DataFrame(rows, columns=header), parser


def text_of(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in [*at.markdown, *at.caption, *at.title, *at.info, *at.error])


# ------------------------------------------------------------------------------------- overview


def test_overview_shows_means_intervals_and_ranks(db, grid, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch)
    table, parsed = board(at)
    means = {(m.name, t): grid.cell(m.name, t)[0] for m in METHODS for t in TASKS}
    assert "Student t on the logit scale, within [0, 1]" in text_of(at)  # the caption names the interval
    average = {m.name: sum(means[(m.name, t)] for t in TASKS) / 3 for m in METHODS}
    order = sorted(average, key=lambda m: -average[m])
    assert list(table["method"]) == order
    assert parsed.links == [f"method?method={m}" for m in order]  # each name opens its page
    assert "svd" not in set(table["method"])  # its only run failed
    assert list(table["rank"]) == [str(i) for i in range(1, len(order) + 1)]
    assert list(table.columns[:3]) == ["rank", "method", "source"] and set(table["source"]) == {"built in"}
    assert list(table.columns[5:8]) == ["math_code", "code", "math"]
    assert "hidden" not in table.columns  # no method was scored on a hidden set
    for task in TASKS:
        rank = competition_rank({m: means[(m, task)] for m in average})
        for row, method in enumerate(order):
            mean, half = grid.cell(method, task)
            assert table.at[row, task] == f"{mean:.3f} ± {half:.3f} #{rank[method]}"
    best_expert = max(means[("expert-math", "math_code")], means[("expert-code", "math_code")])
    for row, method in enumerate(order):
        assert table.at[row, "average"] == f"{average[method]:.3f}"
        assert table.at[row, "composition gain"] == f"{means[(method, 'math_code')] - best_expert:+.3f}"
        retention = (means[(method, "math")] / means[("expert-math", "math")]
                     + means[(method, "code")] / means[("expert-code", "code")]) / 2
        assert table.at[row, "retention"] == f"{retention:.3f}"
    top_on_composite = max(average, key=lambda m: means[(m, "math_code")])
    column = list(table.columns).index("math_code")
    assert {(r, c) for r, c in parsed.best if c == column} == {(order.index(top_on_composite), column)}
    body = at.get("html")[0].proto.body
    assert f'Top method (average)</div><div class="value">{order[0]}<' in body
    assert f'Runs stored</div><div class="value">{len(METHODS) * len(TASKS) * len(SEEDS)}<' in body


def test_overview_filters_and_sorting(db, grid, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch)
    family = next(w for w in at.sidebar.multiselect if w.label == "Method family")
    family.set_value([f for f in family.options if f != "baseline"]).run()
    table, _ = board(at)
    assert set(table["method"]) == set(MERGES)
    assert list(table["rank"]) == ["1", "2", "3", "4", "5"]  # ranks among what is shown
    at.sidebar.selectbox(key="sort").set_value("merge cost").run()
    costs = [float(v.replace(",", "")) for v in board(at)[0]["merge s"]]
    assert costs == sorted(costs)
    consumes = next(w for w in at.sidebar.multiselect if w.label.startswith("Consumes"))
    consumes.set_value(["skill_sample"]).run()
    assert list(board(at)[0]["uses"]) == ["skill-data sample"]


def test_overview_base_model_filter_and_suite_switch(db, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, suite="mixed")
    table, _ = board(at)
    assert set(table["base"]) == {"meta-llama/Llama-2-7b-hf + micro Llama (hidden 128, 2 layers)"}
    assert "2 base models" in at.warning[0].value
    base = next(w for w in at.sidebar.multiselect if w.label == "Base model")
    base.set_value(["meta-llama/Llama-2-7b-hf"]).run()
    table, _ = board(at)
    assert "base" not in table.columns and not at.warning
    grid = fill_grid(f"sqlite:///{db.parent / 'mixed.db'}", suite="mixed", seeds=(0, 1), base=HUB)
    row = list(table["method"]).index("cat")
    mean, half = grid.cell("cat", "math_code", seeds=(0, 1))  # two seeds: t with 1 df
    assert table.at[row, "math_code"].startswith(f"{mean:.3f} ± {half:.3f} #")


# ----------------------------------------------------------------------------------- task page


def test_task_page_numbers_and_samples(db, grid, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, page="task", task="math_code")
    assert "Word problems via programs" in at.title[0].value
    assert "GSM-Hard" in text_of(at) and ":blue-badge[math] :blue-badge[code]" in text_of(at)
    assert len(at.get("vega_lite_chart")) == 1
    table = at.dataframe[0].value
    means = {m.name: grid.cell(m.name, "math_code")[0] for m in METHODS}
    rank = competition_rank(means)
    for row in table.itertuples():
        mean, half = grid.cell(row.label, "math_code")
        assert (row.mean, row.half_width) == pytest.approx((mean, half), abs=1e-9)
        assert row.rank == rank[row.label]
        _, low, high = grid.bounds(row.label, "math_code")
        assert row.interval == f"[{low:.3f}, {high:.3f}]"

    by_category = at.dataframe[1].value  # in the task table's order (by rank)
    assert list(by_category["method"]) == list(table["label"])
    for row in by_category.to_dict("records"):
        for category in CATEGORIES:
            assert row[category] == pytest.approx(grid.category_accuracy(row["method"], category), abs=1e-9)

    at.selectbox(key="sample_method").set_value("ties").run()
    at.selectbox(key="sample_seed").set_value(1).run()
    flags = grid.correct[("ties", "math_code", 1)]
    assert f"**{sum(flags)} of {len(flags)} right**" in text_of(at)
    samples = at.dataframe[2].value
    assert list(samples["result"]) == ["right" if f else "wrong" for f in flags]
    assert samples["prompt"].str.contains("cows").all() and samples["executed"].notna().all()
    at.toggle(key="only_wrong").set_value(True).run()
    assert len(at.dataframe[2].value) == flags.count(False)
    assert "wrong" in text_of(at)


def test_task_without_categories_shows_no_breakdown(db, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, page="task", task="math")
    assert "Accuracy by kind of question" not in [h.value for h in at.subheader]
    assert len(at.dataframe) == 2  # the task table and the samples


# --------------------------------------------------------------------------------- method page


def test_method_page(db, grid, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, page="method", method="cat")
    assert at.title[0].value == "cat"
    text = text_of(at)
    assert "https://arxiv.org/abs/2410.13025" in text and "concatenation" in text
    assert "skill-data sample" in text and "Concatenated expert LoRAs" in text
    assert at.json[0].value.replace(" ", "").replace("\n", "") == '{"sample_fraction":0.05,"steps":100}'
    assert at.metric[0].value == f"{grid.merge_seconds['cat']:,.2f}"
    assert at.metric[2].value == "16"
    scores = at.dataframe[0].value
    for row in scores.itertuples():
        mean, half = grid.cell("cat", row.task)
        rank = competition_rank({m.name: grid.cell(m.name, row.task)[0] for m in METHODS})["cat"]
        assert (row.mean, row.half_width) == pytest.approx((mean, half), abs=1e-9)
        assert row.place == f"{rank} of {len(METHODS)}"
    spread = at.dataframe[1].value
    for task in TASKS:
        assert list(spread.loc[task]) == pytest.approx([grid.values[("cat", task, s)] for s in SEEDS])


def _learned_chart(at: AppTest) -> tuple[dict, pd.DataFrame] | None:
    """The method page's learned-weights heatmap (its Vega-Lite spec and the data it draws), if any."""
    import pyarrow as pa

    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        if spec.get("mark") in ("rect", {"type": "rect"}):
            (dataset,) = chart.proto.datasets
            return spec, pa.ipc.open_stream(dataset.data.data).read_pandas()
    return None


def test_method_page_of_cat_shows_its_learned_weights_per_layer_and_module(db, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, page="method", method="cat")
    assert "Learned weights" in [h.value for h in at.subheader]
    spec, values = _learned_chart(at)
    cells = {(v.expert, v.layer, v.module): v.weight for v in values.itertuples()}
    assert len(cells) == 2 * len(CAT_MODULES)  # every expert x layer x module, seeds averaged
    for i, path in enumerate(CAT_MODULES):
        layer, module = path.split(".")[2], ".".join(path.split(".")[3:])
        assert cells[("math", layer, module)] == pytest.approx(0.3 + 0.1 * i + 0.01 * sum(SEEDS) / len(SEEDS))
        assert cells[("code", layer, module)] == pytest.approx(0.7 - 0.1 * i)
    assert spec["encoding"]["y"]["field"] == "layer" and spec["encoding"]["x"]["field"] == "module"


def test_method_page_of_lorahub_shows_one_weight_per_expert_and_ties_none(db, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, page="method", method="lorahub")
    _, values = _learned_chart(at)
    assert {(v.expert, v.layer): round(v.weight, 6) for v in values.itertuples()} == {("math", "all"): 0.41, ("code", "all"): 0.6}
    assert "One weight per expert serves every module." in text_of(at)
    at = start(f"sqlite:///{db}", monkeypatch, page="method", method="ties")
    assert "Learned weights" not in [h.value for h in at.subheader] and _learned_chart(at) is None


def test_method_page_shows_the_sandbox_its_programs_ran_in(db, monkeypatch) -> None:
    program_runs = len(SEEDS) * len([t for t in TASKS if t != "math"])  # code and math_code run programs
    at = start(f"sqlite:///{db}", monkeypatch, page="method", method="cat")
    assert f"**programs ran in:** bubblewrap 0.8.0 (strong, {program_runs} runs)" in [m.value for m in at.markdown]
    assert not at.warning
    at = start(f"sqlite:///{db}", monkeypatch, page="method", method="data_mix")
    assert "(weak, " in text_of(at) and "bubblewrap (bwrap) is not installed" in text_of(at)
    assert at.warning[0].value.startswith(f"{program_runs} of its {program_runs} runs that executed")


# -------------------------------------------------------------------------------- compare page


def test_compare_page_paired_bootstrap(db, grid, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, page="compare", a="cat", b="ties")
    table = at.dataframe[0].value.set_index("task")
    for task in TASKS:
        a = np.array([f for s in SEEDS for f in grid.correct[("cat", task, s)]], dtype=float)
        b = np.array([f for s in SEEDS for f in grid.correct[("ties", task, s)]], dtype=float)
        naive = (a - b)[np.random.default_rng(1).integers(0, len(a), size=(10_000, len(a)))].mean(axis=1)
        low, high = np.quantile(naive, [0.025, 0.975])
        row = table.loc[task]
        assert row["items"] == len(a) == 300
        assert (row["A"], row["B"], row["difference"]) == pytest.approx((a.mean(), b.mean(), a.mean() - b.mean()))
        shown_low, shown_high = (float(x) for x in row["interval"].strip("[]").split(", "))
        assert (shown_low, shown_high) == pytest.approx((low, high), abs=0.012)
        if low > 0.01 or high < -0.01:
            assert row["verdict"] == ("cat better" if low > 0 else "ties better")
        if low < -0.01 and high > 0.01:
            assert row["verdict"] == "no significant difference"
    assert table.loc["math_code", "verdict"] == "cat better"


def test_compare_needs_two_different_methods(db, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, page="compare", a="cat", b="cat")
    assert any("two different" in w.value for w in at.warning)


# ------------------------------------------------------------------------ plots, submit, states


def test_plots_page(db, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, page="plots")
    assert len(at.get("vega_lite_chart")) == 3
    assert [h.value for h in at.subheader] == [
        "Score against merge cost", "Composition against retention", "Score against number of skills"]


def test_submit_page_shows_the_readme_text(db, monkeypatch) -> None:
    at = start(f"sqlite:///{db}", monkeypatch, page="submit")
    submit = (APP.parent / "submit.md").read_text()
    assert any(m.value.strip() == submit.strip() for m in at.markdown)


@pytest.mark.parametrize("page", [None, "task", "method", "compare", "plots"])
def test_empty_database_explains_what_to_do(tmp_path, monkeypatch, page) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_store(url).close()
    at = start(url, monkeypatch, page=page)
    assert "No results yet" in at.info[0].value and "soupbench run" in at.info[0].value


def test_missing_database_is_an_error_not_a_new_file(tmp_path, monkeypatch) -> None:
    missing = tmp_path / "nowhere.db"
    at = start(f"sqlite:///{missing}", monkeypatch)
    assert "no results database" in at.error[0].value
    assert not missing.exists()
    assert at.switch_page("views/submit.py").run().title[0].value == "How to submit a method"


def test_browsing_never_writes_to_the_database(db, monkeypatch) -> None:
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    at = start(f"sqlite:///{db}", monkeypatch)
    for page in ("task", "method", "compare", "plots"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


# ------------------------------------------------------------------- where a row came from (0003)


@pytest.fixture(scope="module")
def subs(tmp_path_factory) -> tuple[str, dict]:
    """A board with three submissions: soup_a reproduced and scored on the hidden set, soup_b only
    imported, soup_c not reproduced (see `fill_submissions`)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('subs') / 'subs.db'}"
    return url, fill_submissions(url)


BUILT_IN = {"base", "expert-math", "expert-code", "task_arithmetic"}


def test_overview_shows_each_rows_source_and_its_hidden_score(subs, monkeypatch) -> None:
    url, submitted = subs
    table, _ = board(start(url, monkeypatch))
    source = dict(zip(table["method"], table["source"]))
    n = submitted["soup_a"].compared
    assert {m for m, s in source.items() if s == "built in"} == BUILT_IN
    assert source["soup_a"] == f"submitted by Ada Lovelace: reproduced ({n}/{n} samples), scored on the hidden set"
    assert source["soup_b"] == "submitted by Bob Builder: imported, not verified"
    assert source["soup_c"] == f"submitted by Cy Young: not reproduced ({n * 9 // 10}/{n} samples)"
    hidden = dict(zip(table["method"], table["hidden"]))
    assert hidden.pop("soup_a") == f"{hand_hidden_average(submitted['soup_a']):.3f}"
    assert set(hidden.values()) == {"—"}  # the others were never scored on it
    assert list(table.columns).index("hidden") == list(table.columns).index("average") + 1  # side by side


def test_verified_rows_only_hides_unverified_submissions(subs, monkeypatch) -> None:
    url, _ = subs
    at = start(url, monkeypatch)
    assert {"soup_b", "soup_c"} <= set(board(at)[0]["method"])
    at.sidebar.toggle(key="verified_only").set_value(True).run()
    assert not at.exception
    table, _ = board(at)
    assert set(table["method"]) == BUILT_IN | {"soup_a"}
    assert list(table["rank"]) == [str(i) for i in range(1, 6)]  # ranked among what is shown
    at.sidebar.toggle(key="verified_only").set_value(False).run()
    assert len(board(at)[0]) == 7


def test_method_page_of_a_submission_names_who_sent_it_and_shows_its_source(subs, monkeypatch) -> None:
    url, submitted = subs
    a = submitted["soup_a"]
    at = start(url, monkeypatch, page="method", method="soup_a")
    text = text_of(at)
    assert f"**submitted by:** Ada Lovelace ({a.contact})" in text
    assert f"**bundle:** `{a.bundle_sha256[:12]}` of 2026-11-30" in text
    assert f"**state:** reproduced ({a.compared}/{a.compared} samples), verified " in text
    assert "scored on the hidden set" in text
    (code,) = at.code
    assert code.value.strip() == SOUP_SOURCE.replace('"soup"', '"soup_a"').strip() and code.language == "python"
    assert any(e.label.startswith("Method source: soup_a.py") for e in at.expander)
    assert "Public and hidden scores" in [h.value for h in at.subheader]
    both = at.dataframe[1].value  # after the scores across tasks
    assert list(both["task"]) == ["math_code", "code", "math"] and set(both["hidden_set"]) == {HIDDEN_SET}
    for row in both.itertuples():
        public = sum(a.public[(row.task, s)] for s in SUBMISSION_SEEDS) / len(SUBMISSION_SEEDS)
        hidden = sum(a.hidden[(row.task, s)] for s in SUBMISSION_SEEDS) / len(SUBMISSION_SEEDS)
        assert (row.public, row.hidden) == pytest.approx((public, hidden))


def test_method_page_of_an_unverified_submission_and_of_a_built_in_method(subs, monkeypatch) -> None:
    url, submitted = subs
    at = start(url, monkeypatch, page="method", method="soup_b")
    text = text_of(at)
    assert "**submitted by:** Bob Builder (bob.builder@example.org)" in text
    assert f"`{submitted['soup_b'].bundle_sha256[:12]}` of 2026-11-28" in text
    assert "**state:** imported, not verified" in text and "verified 20" not in text
    assert "Public and hidden scores" not in [h.value for h in at.subheader]
    at = start(url, monkeypatch, page="method", method="task_arithmetic")
    assert "**source:** built in" in text_of(at) and "submitted by" not in text_of(at)
    assert not at.code


def test_the_release_reference_made_before_submissions_still_renders(monkeypatch) -> None:
    """The micro release's reference results (schema before 0003: no submission tables)."""
    from benchmark.release import reference_db_url

    url = reference_db_url()
    at = start(url, monkeypatch)
    table, _ = board(at)
    assert len(table) == 13 and set(table["source"]) == {"built in"} and "hidden" not in table.columns
    at.sidebar.toggle(key="verified_only").set_value(True).run()
    assert not at.exception and len(board(at)[0]) == 13  # every row is built in
    at = start(url, monkeypatch, page="method", method="cat")
    assert "**source:** built in" in text_of(at)
