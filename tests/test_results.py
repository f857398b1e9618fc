"""The read side: t quantiles, aggregation over seeds, read-only access, and output formats."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import statistics
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy
from sqlalchemy import text

from benchmark.errors import UserError
from benchmark.results import ResultRecord, format_records, mean_interval, open_readonly, t_quantile
from benchmark.storage import RunRecord, SampleRecord, ScoreRecord, open_store, params_key
from tests.leaderboard_fixtures import logit_bounds

# Two-sided 95% critical values of Student's t from printed tables (and scipy.stats.t.ppf).
T_975 = {1: 12.7062047, 2: 4.3026527, 3: 3.1824463, 4: 2.7764451, 9: 2.2621572, 29: 2.0452296, 120: 1.9799304}
Z_975 = 1.959963984540054


def make_run(
    method: str, task: str, seed: int, value: float, stderr: float | None = 0.02, status: str = "ok",
    merge_seconds: float = 1.0, params: dict | None = None, suite: str = "micro",
) -> RunRecord:
    return RunRecord(
        suite=suite, method=method, method_params=params or {}, task=task, seed=seed,
        scores=[
            ScoreRecord("exact_match", value, stderr, 50, True),
            ScoreRecord("format_ok", 1.0 - value, None, 50, False),
        ],
        samples=[SampleRecord(i, f"q{i}", f"a{i}", f"t{i}", None, i % 2 == 0, {"i": i}) for i in range(3)],
        merge_seconds=merge_seconds, eval_seconds=2.0, peak_memory_mb=100.0 + seed, output_rank=None,
        consumes="skill_sample" if method == "cat" else "nothing", n_target_examples=None,
        base_fingerprint="b", expert_fingerprints={}, provenance={}, spec={}, status=status,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database with 3 seeds of `ties`, 1 of `cat`, a failed `ties` run and a second suite."""
    path = tmp_path / "results.db"
    with open_store(f"sqlite:///{path}") as store:
        store.save_runs(
            [
                make_run("ties", "math_code", 0, 0.40, stderr=0.010, merge_seconds=1.0),
                make_run("ties", "math_code", 1, 0.55, stderr=0.020, merge_seconds=2.0),
                make_run("ties", "math_code", 2, 0.47, stderr=None, merge_seconds=6.0),
                make_run("ties", "math_code", 3, 0.99, status="failed"),
                make_run("cat", "math_code", 0, 0.61, stderr=0.03),
                make_run("cat", "manual_qa", 0, 0.33, stderr=None),
                make_run("ties", "math_code", 0, 0.9, suite="paper"),
            ]
        )
    return path


def by_key(records: list[ResultRecord]) -> dict[tuple[str, str, str], ResultRecord]:
    return {(r.method, r.task, r.metric): r for r in records}


# ------------------------------------------------------------------------------------- quantiles


@pytest.mark.parametrize("df,expected", sorted(T_975.items()))
def test_t_quantile_matches_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


def test_t_quantile_symmetry_and_limits() -> None:
    assert t_quantile(0.025, 4) == pytest.approx(-T_975[4])
    assert t_quantile(0.5, 3) == 0.0
    # Large df (Cornish-Fisher branch) approaches the normal quantile from above.
    assert Z_975 < t_quantile(0.975, 5000) < t_quantile(0.975, 1000) < t_quantile(0.975, 999)
    assert t_quantile(0.975, 10**7) == pytest.approx(Z_975, abs=1e-6)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_t_quantile_agrees_with_scipy_across_df_and_p() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 17, 30, 64, 999, 1001, 20000):
        for p in (0.6, 0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


# ----------------------------------------------------------------------------------- aggregation


def test_three_seeds_mean_and_interval_match_an_independent_computation(db_path: Path) -> None:
    records = by_key(open_readonly(f"sqlite:///{db_path}").records("micro"))
    r = records[("ties", "math_code", "exact_match")]
    values = np.array([0.40, 0.55, 0.47])  # the failed seed-3 run (0.99) must not count
    mean, sd = values.mean(), values.std(ddof=1)
    low, high = logit_bounds(mean, T_975[2] * sd / math.sqrt(3))
    assert r.n_seeds == 3 and r.seeds == [0, 1, 2] and r.primary
    assert r.mean == pytest.approx(mean, abs=1e-12)
    assert r.std == pytest.approx(sd, abs=1e-12)
    assert r.ci_low == pytest.approx(low, abs=1e-6)
    assert r.ci_high == pytest.approx(high, abs=1e-6)
    assert r.mean_stderr == pytest.approx(0.015)  # mean of the known stderrs only
    assert r.merge_seconds == pytest.approx(3.0)
    assert r.peak_memory_mb == pytest.approx(101.0)
    assert r.consumes == "nothing"
    secondary = records[("ties", "math_code", "format_ok")]
    assert not secondary.primary
    assert secondary.mean == pytest.approx(1 - mean)


def test_one_seed_uses_the_run_stderr_or_collapses(db_path: Path) -> None:
    records = by_key(open_readonly(f"sqlite:///{db_path}").records("micro"))
    with_stderr = records[("cat", "math_code", "exact_match")]
    assert with_stderr.n_seeds == 1 and with_stderr.std is None
    assert (with_stderr.ci_low, with_stderr.ci_high) == pytest.approx(logit_bounds(0.61, Z_975 * 0.03))
    without = records[("cat", "manual_qa", "exact_match")]
    assert without.ci_low == without.mean == without.ci_high == pytest.approx(0.33)
    assert without.consumes == "skill_sample"


def test_mean_interval_directly() -> None:
    values = [0.1, 0.2, 0.3, 0.5, 0.4]
    mean, low, high = mean_interval(values, [None] * 5)
    half = T_975[4] * statistics.stdev(values) / math.sqrt(5)
    assert (mean, low, high) == pytest.approx((0.3, *logit_bounds(0.3, half)), abs=1e-7)


@pytest.mark.parametrize("values", [[0.0, 0.02, 0.0], [0.01, 0.0, 0.0, 0.03], [1.0, 0.97, 1.0], [0.99, 1.0, 0.96, 1.0]])
def test_interval_of_a_share_near_zero_or_one_stays_within_the_unit_interval(values) -> None:
    mean, low, high = mean_interval(values, [None] * len(values))
    n = len(values)
    t_half = T_975[n - 1] * statistics.stdev(values) / math.sqrt(n)
    assert not 0 <= mean - t_half <= mean + t_half <= 1  # the plain t-interval would leave [0, 1]
    assert 0 < low < mean < high < 1


def test_interval_of_a_share_shrinks_with_more_seeds_and_keeps_bounds_on_the_point() -> None:
    few, many = [0.02, 0.0, 0.04], [0.02, 0.0, 0.04] * 4  # same mean and spread, 3 then 12 seeds
    (_, low_few, high_few), (_, low_many, high_many) = (mean_interval(v, [None] * len(v)) for v in (few, many))
    assert low_few < low_many < 0.02 < high_many < high_few
    assert mean_interval([0.0, 0.0, 0.0], [None] * 3) == (0.0, 0.0, 0.0)  # no spread: the point
    assert mean_interval([1.0], [0.0]) == (1.0, 1.0, 1.0)
    _, low, high = mean_interval([0.02], [0.02])  # one seed: its own stderr, bounded too
    assert 0 < low < 0.02 < high < 1


def test_a_metric_outside_the_unit_interval_keeps_the_plain_t_interval() -> None:
    values = [1.5, 2.5, 2.0]  # not a share
    mean, low, high = mean_interval(values, [None] * 3)
    half = T_975[2] * statistics.stdev(values) / math.sqrt(3)
    assert (low, high) == pytest.approx((2.0 - half, 2.0 + half))


def test_records_filter_by_suite_and_keep_parameter_settings_apart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with open_store(url) as store:
        store.save_runs(
            [make_run("ties", "t", s, 0.1 * (s + 1), params={"density": 0.2}) for s in range(2)]
            + [make_run("ties", "t", 0, 0.9, params={"density": 0.8}), make_run("ties", "t", 0, 0.7, suite="paper")]
        )
    reader = open_readonly(url)
    primary = [r for r in reader.records("micro") if r.primary]
    assert {r.params_key: (r.n_seeds, round(r.mean, 9)) for r in primary} == {
        params_key({"density": 0.2}): (2, 0.15),
        params_key({"density": 0.8}): (1, 0.9),
    }
    assert {r.suite for r in reader.records()} == {"micro", "paper"}
    assert reader.suites() == ["micro", "paper"]
    assert "ties [density=0.2]" in format_records(primary, "table")


# ------------------------------------------------------------------------------------- drill-down


def test_runs_and_samples(db_path: Path) -> None:
    reader = open_readonly(f"sqlite:///{db_path}")
    failed = reader.runs(status="failed")
    assert [(r.method, r.seed, r.status) for r in failed] == [("ties", 3, "failed")]
    cat = reader.runs(suite="micro", method="cat", task="manual_qa")
    assert len(cat) == 1 and {s.metric: s.value for s in cat[0].scores}["exact_match"] == 0.33
    samples = reader.samples(cat[0].id)
    got = [(s.doc_index, s.correct, s.extra) for s in samples]
    assert got == [(0, True, {"i": 0}), (1, False, {"i": 1}), (2, True, {"i": 2})]
    with pytest.raises(LookupError):
        reader.samples(10_000)


# ------------------------------------------------------------------------------------- read-only


def test_reader_cannot_write(db_path: Path) -> None:
    reader = open_readonly(f"sqlite:///{db_path}")
    with pytest.raises(sqlalchemy.exc.OperationalError, match="readonly"):
        with reader.engine.begin() as conn:
            conn.execute(text("DELETE FROM scores"))
    reader.close()
    assert sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 14


def test_reader_sees_rows_committed_while_a_writer_is_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with open_store(url) as store:
        store.save_runs([make_run("ties", "t", 0, 0.5)])
        reader = open_readonly(url)
        assert len(reader.records()) == 2
        store.save_runs([make_run("ties", "t", 1, 0.7)])
        assert {r.n_seeds for r in reader.records()} == {2}


def test_missing_database_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(UserError, match="no results database at .*nope.db"):
        open_readonly(f"sqlite:///{missing}")
    assert not missing.exists()


def test_database_without_tables_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE other (x INT)").connection.close()
    with pytest.raises(UserError, match=r"holds other tables \(other\) and no SoupBench schema"):
        open_readonly(f"sqlite:///{empty}")


def test_path_with_spaces_and_question_mark(tmp_path: Path) -> None:
    path = tmp_path / "my results?#.db"
    with open_store(f"sqlite:///{path}") as store:
        store.save_runs([make_run("ties", "t", 0, 0.5)])
    assert len(open_readonly(f"sqlite:///{path}").records()) == 2


# ---------------------------------------------------------------------------------------- formats


def test_json_parses_back_to_the_same_numbers(db_path: Path) -> None:
    records = open_readonly(f"sqlite:///{db_path}").records()
    parsed = json.loads(format_records(records, "json"))
    assert len(parsed) == len(records)
    for row, record in zip(parsed, records):
        assert {"suite", "method", "task", "metric", "mean", "ci_low", "ci_high", "n_seeds", "primary"} <= set(row)
        assert ResultRecord.model_validate(row) == record


def test_csv_parses_back_to_the_same_numbers(db_path: Path) -> None:
    records = open_readonly(f"sqlite:///{db_path}").records()
    rows = list(csv.DictReader(io.StringIO(format_records(records, "csv"))))
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        for key in ("suite", "method", "task", "metric", "params_key", "consumes"):
            assert row[key] == getattr(record, key)
        assert float(row["mean"]) == record.mean
        assert (float(row["ci_low"]), float(row["ci_high"])) == (record.ci_low, record.ci_high)
        assert int(row["n_seeds"]) == record.n_seeds
        assert json.loads(row["primary"]) is record.primary
        assert json.loads(row["seeds"]) == record.seeds
        assert (row["std"] == "") == (record.std is None)


def test_table_shows_primary_metric_per_method_and_task(db_path: Path) -> None:
    records = open_readonly(f"sqlite:///{db_path}").records("micro")
    r = by_key(records)[("ties", "math_code", "exact_match")]
    table = format_records(records, "table", width=200)
    cell = f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] (3)"
    assert cell in table and "Student t on the logit scale" in table
    assert "exact_match" in table and "format_ok" not in table
    split = ([c.strip() for c in line.split("│") if c.strip()] for line in table.splitlines())
    rows = {cells[0]: cells[1:] for cells in split if cells}
    # Tasks are columns in name order: manual_qa, then math_code; ties has no manual_qa run.
    assert rows["ties"] == ["-", cell]
    low, high = logit_bounds(0.61, Z_975 * 0.03)
    assert rows["cat"] == ["0.330 [0.330, 0.330] (1)", f"0.610 [{low:.3f}, {high:.3f}] (1)"]
    assert "\x1b[" not in table
    assert format_records([], "table").strip() == "No results stored."
    with pytest.raises(ValueError):
        format_records(records, "yaml")  # type: ignore[arg-type]


def test_every_query_reads_the_same_from_sqlite_and_postgresql(tmp_path: Path, pg_url: str) -> None:
    # The reader's SQL (aggregates, JSON fields, the quoted "primary") is the same on both servers.
    runs = [make_run("ties", "math_code", s, 0.1 * (s + 2), params={"density": 0.5}) for s in range(3)]
    runs.append(make_run("cat", "math_code", 0, 0.6, status="failed"))
    for run in runs:
        for sample in run.samples:
            sample.extra = {"category": "add" if sample.doc_index < 2 else "share"}
        run.samples[0].executed = "printed \x00 and more"  # a NUL a program printed (PostgreSQL text has none)
    answers = []
    for url in (f"sqlite:///{tmp_path / 'r.db'}", pg_url):
        with open_store(url) as store:
            store.save_runs(runs)
        reader = open_readonly(url)
        listed = reader.runs()
        answers.append((
            [r.model_dump() for r in reader.records()],
            [r.model_dump(exclude={"id", "created_at"}) for r in listed],
            [s.model_dump() for s in reader.samples(listed[0].id)],
            [c.model_dump(exclude={"run_id"}) for c in reader.category_counts("micro", "math_code")],
            reader.suites(),
        ))
        reader.close()
    assert answers[0] == answers[1]
    records, _, samples, categories, _ = answers[0]
    assert [round(r["mean"], 9) for r in records if r["primary"]] == [0.3]
    assert samples[0]["executed"] == "printed \ufffd and more"
    assert [(c["category"], c["n"], c["n_correct"]) for c in categories] == [("add", 2, 1), ("share", 1, 1)] * 3
