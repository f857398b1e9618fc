"""The read-only query layer over stored runs: what `soupbench results` and the leaderboard read.

It imports the schema from `benchmark.storage` and nothing of methods, training or evaluation, so
the leaderboard stays a thin reader. It never creates tables and, on SQLite, opens the file in
read-only mode so that a bug in a page cannot damage the results.

Aggregation: one `ResultRecord` per (suite, method and its parameters, task, metric) over the
seeds stored as ok, with a 95% interval of the mean across seeds that stays within [0, 1] for a
share (see `mean_interval` and `INTERVAL_NAME`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine, case, func, select
from sqlalchemy.orm import Session, selectinload

from benchmark.database import open_engine, shown
from benchmark.run_spec import RunSpec
from benchmark.schema_version import check_readable
from benchmark.storage import Run, Sample, Score

CONFIDENCE = 0.95
INTERVAL_NAME = "Student t on the logit scale"


# ----------------------------------------------------------------------------------- statistics


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with `df` degrees of freedom, without scipy.

    For integer df the two-sided probability P(|T| < t) has a finite closed form in
    theta = atan(t / sqrt(df)) (Abramowitz & Stegun 26.7.3-4); bisection on theta inverts it to
    machine precision. Beyond 1000 df the Cornish-Fisher expansion around the normal quantile is
    exact to far more digits than an interval needs, and avoids a series of df/2 terms.
    """
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if df > 1000:
        return _cornish_fisher(p, df)
    target = 2.0 * p - 1.0
    low, high = 0.0, math.pi / 2
    for _ in range(200):
        mid = 0.5 * (low + high)
        if _t_central_probability(mid, df) < target:
            low = mid
        else:
            high = mid
        if high - low < 1e-15:
            break
    return math.sqrt(df) * math.tan(0.5 * (low + high))


def _t_central_probability(theta: float, df: int) -> float:
    """P(|T| < sqrt(df) * tan(theta)) for integer df (A&S 26.7.3 odd, 26.7.4 even)."""
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        series, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            if k > 1:
                term *= cos2 * (2 * k - 2) / (2 * k - 1)
            series += term
        return (2.0 / math.pi) * (theta + sin * series)
    series, term = 1.0, 1.0
    for k in range(1, df // 2):
        term *= cos2 * (2 * k - 1) / (2 * k)
        series += term
    return sin * series


def _cornish_fisher(p: float, df: int) -> float:
    z = statistics.NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def mean_interval(values: list[float], stderrs: list[float | None]) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high): the 95% interval of the mean over seeds.

    The standard error is the seeds' (sd / sqrt(n), a Student t quantile with n - 1 df); with one
    seed there is no spread to measure, and the run's own lm-eval stderr (over samples, a normal
    quantile) is the best available width; without it the interval collapses to the point.
    `share_bounds` turns that standard error into bounds that stay within [0, 1].
    """
    n = len(values)
    mean = statistics.fmean(values)
    if n >= 2:
        factor, se = t_quantile(0.5 + CONFIDENCE / 2, n - 1), statistics.stdev(values) / math.sqrt(n)
    elif stderrs and stderrs[0] is not None:
        factor, se = statistics.NormalDist().inv_cdf(0.5 + CONFIDENCE / 2), stderrs[0]
    else:
        factor, se = 0.0, 0.0
    is_share = all(0.0 <= v <= 1.0 for v in values)
    low, high = share_bounds(np.array([mean]), np.array([factor * se]), np.array([is_share]))
    return mean, float(low[0]), float(high[0])


def share_bounds(mean: np.ndarray, half: np.ndarray, is_share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of a mean with half-width `half` (quantile x standard error), elementwise.

    Every SoupBench metric is a share of documents (accuracies: lm-eval's mean of a 0/1 outcome),
    and a symmetric t-interval of a mean near 0 or 1 leaves [0, 1]. For a share, the interval is
    the same t-interval taken on the logit scale, its standard error carried there by the delta
    method (se / (m (1 - m))), then mapped back (as R's `survey::svyciprop(method = "logit")`):
    it stays inside (0, 1), always contains the mean, is asymmetric near the bounds, and shrinks
    as seeds are added just as the t-interval does. Why not the alternatives for a mean over a
    few seeds: a percentile bootstrap over 3-5 seeds has a handful of distinct resamples and is
    far too narrow; Wilson over the pooled samples ignores the spread between seeds (different
    experts), which is most of the uncertainty; clipping a t-interval at 0 claims a bound the data
    did not give. A mean of exactly 0 or 1 means every seed scored so (no spread), and the
    interval is the point, as the t-interval's is. A metric outside [0, 1] is not a share and
    keeps the plain t-interval.
    """
    mean, half = np.asarray(mean, dtype=float), np.asarray(half, dtype=float)
    inside = np.asarray(is_share, dtype=bool) & (mean > 0) & (mean < 1) & (half > 0)
    safe = np.where(inside, mean, 0.5)
    logit, logit_half = np.log(safe / (1 - safe)), half / (safe * (1 - safe))
    low = np.where(inside, 1 / (1 + np.exp(-(logit - logit_half))), mean - half)
    high = np.where(inside, 1 / (1 + np.exp(-(logit + logit_half))), mean + half)
    on_bound = np.asarray(is_share, dtype=bool) & ~inside
    return np.where(on_bound, mean, low), np.where(on_bound, mean, high)


# -------------------------------------------------------------------------------------- records


class ResultRecord(BaseModel):
    """One (suite, method, task, metric) aggregated over seeds; the unit of every results view.

    A method run with several parameter settings gives one record per setting (told apart by
    `params_key`), because averaging different hyperparameters together would mean nothing.
    """

    model_config = ConfigDict(frozen=True)

    suite: str
    method: str
    method_params: dict[str, Any]
    params_key: str
    task: str
    metric: str
    primary: bool
    mean: float
    ci_low: float
    ci_high: float
    n_seeds: int
    seeds: list[int]
    std: float | None
    mean_stderr: float | None
    merge_seconds: float
    eval_seconds: float
    peak_memory_mb: float
    consumes: str

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


class ScoreRow(BaseModel):
    metric: str
    value: float
    stderr: float | None
    n_samples: int
    primary: bool


class RunRow(BaseModel):
    """One stored run for drill-down (samples are fetched separately: they can be large)."""

    id: int
    suite: str
    method: str
    method_params: dict[str, Any]
    params_key: str
    task: str
    seed: int
    status: str
    error: str | None
    merge_seconds: float
    eval_seconds: float
    peak_memory_mb: float
    output_rank: int | None
    consumes: str
    n_target_examples: int | None
    base_fingerprint: str
    expert_fingerprints: dict[str, str]
    provenance: dict[str, Any]
    spec: dict[str, Any]
    created_at: datetime
    scores: list[ScoreRow]

    @property
    def run_spec(self) -> RunSpec | None:
        """The stored spec, typed (None for a failed row stored before specs were typed)."""
        return RunSpec.from_stored(self.spec)


class CategoryCount(BaseModel):
    """Scored samples of one run in one category (a task document's kind, e.g. its operation)."""

    run_id: int
    category: str
    n: int
    n_correct: int


class SampleRow(BaseModel):
    doc_index: int
    prompt: str
    generation: str
    target: str
    executed: str | None
    correct: bool | None
    extra: dict[str, Any]


# --------------------------------------------------------------------------------------- reader


class ResultsReader:
    """Queries over a results database; issues SELECTs only."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def suites(self) -> list[str]:
        with Session(self.engine) as session:
            return sorted(set(session.scalars(select(Run.suite).distinct())))

    def records(self, suite: str | None = None) -> list[ResultRecord]:
        """Aggregate ok runs over seeds, sorted by suite, method, task, metric."""
        query = select(Run, Score).join(Score, Score.run_id == Run.id).where(Run.status == "ok")
        if suite is not None:
            query = query.where(Run.suite == suite)
        groups: dict[tuple[str, str, str, str, str], list[tuple[Run, Score]]] = defaultdict(list)
        with Session(self.engine) as session:
            for run, score in session.execute(query):
                groups[(run.suite, run.method, run.params_key, run.task, score.metric)].append((run, score))
        return [_aggregate(rows) for _, rows in sorted(groups.items(), key=lambda item: item[0])]

    def runs(
        self,
        suite: str | None = None,
        method: str | None = None,
        task: str | None = None,
        status: str | None = None,
    ) -> list[RunRow]:
        """Stored runs (any status unless given), with their scores, oldest first."""
        query = select(Run).options(selectinload(Run.scores)).order_by(Run.id)
        filters = ((Run.suite, suite), (Run.method, method), (Run.task, task), (Run.status, status))
        for column, value in filters:
            if value is not None:
                query = query.where(column == value)
        with Session(self.engine) as session:
            return [_run_row(run) for run in session.scalars(query)]

    def samples(self, run_id: int) -> list[SampleRow]:
        """Per-document outputs of one run, in document order."""
        with Session(self.engine) as session:
            if session.get(Run, run_id) is None:
                raise LookupError(f"no run with id {run_id}")
            query = select(Sample).where(Sample.run_id == run_id).order_by(Sample.doc_index, Sample.id)
            return [SampleRow.model_validate(s, from_attributes=True) for s in session.scalars(query)]

    def category_counts(self, suite: str, task: str) -> list[CategoryCount]:
        """Per ok run of `task` and per category its samples carry: scored samples and right ones.
        Counted in the database (a suite holds samples by the hundred thousand); samples without a
        category are left out."""
        category = Sample.extra["category"].as_string()
        query = (
            select(Sample.run_id, category, func.count(Sample.correct),
                   func.sum(case((Sample.correct.is_(True), 1), else_=0)))
            .join(Run, Run.id == Sample.run_id)
            .where(Run.suite == suite, Run.task == task, Run.status == "ok", category.is_not(None))
            .group_by(Sample.run_id, category)
            .order_by(Sample.run_id, category)
        )
        with Session(self.engine) as session:
            return [CategoryCount(run_id=run_id, category=name, n=n, n_correct=right or 0)
                    for run_id, name, n, right in session.execute(query) if n]

    def close(self) -> None:
        self.engine.dispose()


def _aggregate(rows: list[tuple[Run, Score]]) -> ResultRecord:
    rows = sorted(rows, key=lambda row: row[0].seed)
    first_run, first_score = rows[0]
    values = [score.value for _, score in rows]
    stderrs = [score.stderr for _, score in rows]
    known = [s for s in stderrs if s is not None]
    mean, low, high = mean_interval(values, stderrs)
    return ResultRecord(
        suite=first_run.suite,
        method=first_run.method,
        method_params=first_run.method_params,
        params_key=first_run.params_key,
        task=first_run.task,
        metric=first_score.metric,
        primary=any(score.primary for _, score in rows),
        mean=mean,
        ci_low=low,
        ci_high=high,
        n_seeds=len(rows),
        seeds=[run.seed for run, _ in rows],
        std=statistics.stdev(values) if len(values) >= 2 else None,
        mean_stderr=statistics.fmean(known) if known else None,
        merge_seconds=statistics.fmean(run.merge_seconds for run, _ in rows),
        eval_seconds=statistics.fmean(run.eval_seconds for run, _ in rows),
        peak_memory_mb=statistics.fmean(run.peak_memory_mb for run, _ in rows),
        consumes=first_run.consumes,
    )


def _run_row(run: Run) -> RunRow:
    fields = {name: getattr(run, name) for name in RunRow.model_fields if name != "scores"}
    ordered = sorted(run.scores, key=lambda s: s.metric)
    scores = [ScoreRow.model_validate(s, from_attributes=True) for s in ordered]
    return RunRow(**fields, scores=scores)


def open_readonly(url: str) -> ResultsReader:
    """Open a results database for reading only; never creates nor changes anything.

    SQLite is opened through a `mode=ro` URI, so writes fail in SQLite itself, and a missing file
    is an error rather than a new empty database (which plain SQLite would silently create);
    PostgreSQL sessions are read-only transactions. Anything that is not a SoupBench database this
    code can read (see `benchmark.database` and `benchmark.schema_version`) is a `UserError`.
    """
    engine = open_engine(url, readonly=True)
    try:
        check_readable(engine, shown(url))
    except BaseException:
        engine.dispose()
        raise
    return ResultsReader(engine)


# ------------------------------------------------------------------------------------ formatting


def format_records(
    records: list[ResultRecord], fmt: Literal["table", "json", "csv"], width: int = 120
) -> str:
    """Render records for `soupbench results`: JSON and CSV for machines, a table for people."""
    if fmt == "json":
        return json.dumps([r.model_dump(mode="json") for r in records], indent=2)
    if fmt == "csv":
        return _csv(records)
    if fmt == "table":
        return _table(records, width)
    raise ValueError(f"unknown format {fmt!r}; choose table, json or csv")


def _csv(records: list[ResultRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(ResultRecord.model_fields), lineterminator="\n")
    writer.writeheader()
    for record in records:
        row = record.model_dump(mode="json")
        # Nested values as JSON and booleans in JSON's spelling, so every cell parses back.
        for key, value in row.items():
            if isinstance(value, (dict, list, bool)):
                row[key] = json.dumps(value)
            elif value is None:
                row[key] = ""
        writer.writerow(row)
    return buffer.getvalue()


def _method_labels(records: list[ResultRecord]) -> dict[tuple[str, str], str]:
    """Row label per (method, params_key): the bare name unless a method has several settings."""
    settings: dict[str, set[str]] = defaultdict(set)
    for r in records:
        settings[r.method].add(r.params_key)
    labels = {}
    for r in records:
        if len(settings[r.method]) == 1:
            labels[(r.method, r.params_key)] = r.method
        else:
            params = ",".join(f"{k}={v}" for k, v in sorted(r.method_params.items()))
            labels[(r.method, r.params_key)] = f"{r.method} [{params or r.params_key}]"
    return labels


def _cell_text(record: ResultRecord | None) -> Text:
    if record is None:
        return Text("-")
    return Text(f"{record.mean:.3f} [{record.ci_low:.3f}, {record.ci_high:.3f}] ({record.n_seeds})")


def _table(records: list[ResultRecord], width: int) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    if not records:
        console.print("No results stored.")
    for suite in sorted({r.suite for r in records}):
        in_suite = [r for r in records if r.suite == suite]
        # One metric per task: its primary one, else (no primary recorded) the first by name.
        metric: dict[str, str] = {}
        for r in sorted(in_suite, key=lambda r: (r.task, not r.primary, r.metric)):
            metric.setdefault(r.task, r.metric)
        tasks = sorted(metric)
        labels = _method_labels(in_suite)
        cells: dict[str, dict[str, ResultRecord]] = defaultdict(dict)
        for r in in_suite:
            if r.metric == metric[r.task]:
                cells[labels[(r.method, r.params_key)]][r.task] = r
        table = Table(title=Text(f"suite {suite}: mean [95% interval, {INTERVAL_NAME}] (seeds)"))
        table.add_column("method", style="bold")
        for task in tasks:
            # Text, not str: a name like "ties [density=0.2]" must not be read as rich markup.
            table.add_column(Text(f"{task}\n{metric[task]}"), justify="right")
        for label in sorted(cells):
            row = cells[label]
            table.add_row(Text(label), *(_cell_text(row.get(task)) for task in tasks))
        console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]
