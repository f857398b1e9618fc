"""The leaderboard's read layer: stored runs as pandas frames, aggregated over seeds.

It sits on `benchmark.results` (the read-only engine from `open_readonly`, the same 95% Student-t
interval `mean_interval`, bounded to [0, 1] for shares) and the storage schema, and imports nothing of methods, training or
streamlit, so every number a page shows is computed here and testable without a browser.

Why not `ResultsReader.records()` alone: the overview filters by base model before averaging, and
needs each run's base, class and output rank; one narrow SELECT of those columns is also several
times faster than loading full ORM rows with their provenance, which the 2-second budget on
10,000 runs needs. Aggregation calls the very same `mean_interval`, and a test checks that the
two agree.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import pandas as pd
from sqlalchemy import func, select

from benchmark.results import CONFIDENCE, INTERVAL_NAME, CategoryCount, ResultsReader, SampleRow, share_bounds, t_quantile
from benchmark.storage import Run, Score
from leaderboard.method_info import describe

CONSUMES_LABELS = {
    "nothing": "experts only",
    "skill_sample": "skill-data sample",
    "skill_data": "all skill data",
    "target_examples": "target examples",
}
EXPERT_PREFIX = "expert-"
INTERVAL = f"95% interval ({INTERVAL_NAME}, within [0, 1])"  # how pages name it
REFERENCE_METHODS = ("base",)  # with every expert-<skill>: references, not merges


def consumes_label(value: str) -> str:
    return CONSUMES_LABELS.get(value, value)


def is_reference(method: str) -> bool:
    """Base and single experts are the yardsticks of a suite, not merge methods."""
    return method in REFERENCE_METHODS or method.startswith(EXPERT_PREFIX)


# ---------------------------------------------------------------------------------- task metadata


@dataclass(frozen=True)
class TaskMeta:
    name: str
    display_name: str
    description: str
    skills: tuple[str, ...]
    primary_metric: str | None
    kind: str  # "skill", "composite" or "unknown" (a task whose folder is not installed)
    executes_programs: bool = False  # its responses run in the sandbox


@lru_cache(maxsize=256)
def task_meta(name: str) -> TaskMeta:
    """A task's own metadata; stored runs of a task that is not installed still get a page."""
    try:
        from benchmark.taskinfo import TASKS

        info = TASKS.get(name)
    except Exception:  # an unknown name, or a broken task folder: show the stored data anyway
        return TaskMeta(name, name, "", (), None, "unknown")
    return TaskMeta(name, info.display_name, info.description, tuple(info.skills), info.primary_metric, info.kind,
                    info.executes_programs)


# ------------------------------------------------------------------------------------- run frames


def base_label(spec: dict | None, fingerprint: str) -> str:
    """A readable name for the base model: the hub id, or the micro model's shape."""
    base = ((spec or {}).get("suite") or {}).get("base") or {}
    if base.get("kind") == "hub" and base.get("model_id"):
        revision = base.get("revision")
        return f"{base['model_id']}@{revision}" if revision else str(base["model_id"])
    if base.get("kind") == "micro":
        return f"micro Llama (hidden {base.get('hidden_size', '?')}, {base.get('num_layers', '?')} layers)"
    return f"base {fingerprint[:10]}" if fingerprint else "unknown base"


_RUN_COLUMNS = (
    Run.id, Run.method, Run.params_key, Run.task, Run.seed, Run.status, Run.error,
    Run.merge_seconds, Run.eval_seconds, Run.peak_memory_mb, Run.output_rank, Run.consumes,
    Run.n_target_examples, Run.base_fingerprint,
)
RUN_FRAME_COLUMNS = [
    "run_id", "method", "params_key", "task", "seed", "status", "error", "merge_seconds",
    "eval_seconds", "peak_memory_mb", "output_rank", "consumes", "n_target_examples",
    "base_fingerprint",
]


def load_runs(reader: ResultsReader, suite: str) -> pd.DataFrame:
    """One row per stored run of `suite` (ok and failed), with a display label per setting.

    The JSON columns (parameters, spec) are the same for every run of a (method, parameters,
    base) setting, so they are read once per setting rather than once per run: decoding 10,000
    specs would cost more than the whole rest of the overview.
    """
    with reader.engine.connect() as connection:
        rows = connection.execute(select(*_RUN_COLUMNS).where(Run.suite == suite).order_by(Run.id)).all()
        firsts = (select(func.min(Run.id)).where(Run.suite == suite)
                  .group_by(Run.method, Run.params_key, Run.base_fingerprint))
        settings = connection.execute(
            select(Run.method, Run.params_key, Run.base_fingerprint, Run.method_params, Run.spec)
            .where(Run.id.in_(firsts))).all()
    frame = _frame(rows, RUN_FRAME_COLUMNS)
    frame["output_rank"] = frame["output_rank"].astype("Float64")
    cards = [describe(s.spec) for s in settings]
    described = pd.DataFrame.from_records(
        [(s.method, s.params_key, s.base_fingerprint, json.dumps(s.method_params or {}, sort_keys=True),
          base_label(s.spec, s.base_fingerprint), (s.spec or {}).get("method_class"), card.family,
          card.description, card.paper) for s, card in zip(settings, cards)],
        columns=["method", "params_key", "base_fingerprint", "params", "base", "method_class", "family",
                 "description", "paper"])
    frame = frame.merge(described, on=["method", "params_key", "base_fingerprint"], how="left")
    frame["label"] = method_labels(frame)
    return frame


def method_labels(runs: pd.DataFrame) -> pd.Series:
    """The bare method name, unless a method was run with several parameter settings."""
    settings = runs.groupby("method")["params_key"].nunique()
    text = {}
    for method, params in set(zip(runs["method"], runs["params"])):
        if settings.get(method, 1) <= 1:
            text[(method, params)] = method
        else:
            values = ", ".join(f"{k}={v}" for k, v in sorted(json.loads(params).items()))
            text[(method, params)] = f"{method} [{values}]"
    return pd.Series([text[key] for key in zip(runs["method"], runs["params"])], index=runs.index, dtype=object)


def sandbox_isolation(reader: ResultsReader, run_ids: list[int]) -> pd.DataFrame:
    """How the model-written programs of these runs were confined, from each run's provenance
    (`benchmark.sandbox.isolation_report`): one row per (level, backend) with its number of runs.
    Runs stored before SoupBench recorded it have level "not recorded"."""
    with reader.engine.connect() as connection:
        stored = connection.execute(select(Run.provenance).where(Run.id.in_(run_ids))).scalars().all()
    counts: Counter[tuple[str, str]] = Counter()
    for provenance in stored:
        report = (provenance or {}).get("sandbox") or {}
        counts[(report.get("level", "not recorded"), report.get("backend", ""))] += 1
    return pd.DataFrame([(*key, n) for key, n in sorted(counts.items())], columns=["level", "backend", "runs"])


LEARNED_COLUMNS = ["seed", "layer", "module", "expert", "weight"]
_LAYER = re.compile(r"^(?:.*\.)?layers?\.(\d+)\.(.+)$")


def learned_weights(reader: ResultsReader, run_ids: list[int]) -> pd.DataFrame:
    """The weights a learned method found, per seed, layer, module and expert, from each run's
    provenance (`method_info`, as the method reported it): CAT's one weight per expert per module
    (`module_weights`), LoRAHub's one weight per expert for every module (`expert_weights`, shown
    as layer "all"). One row per (seed, module, expert): a seed's runs share one merge. Empty for a
    method that learns nothing, and for runs stored before the runner kept CAT's module weights."""
    with reader.engine.connect() as connection:
        stored = connection.execute(select(Run.seed, Run.provenance).where(Run.id.in_(run_ids))).all()
    rows, seen = [], set()
    for seed, provenance in stored:
        info = (provenance or {}).get("method_info") or {}
        if seed in seen or not ("module_weights" in info or "expert_weights" in info):
            continue
        seen.add(seed)
        if "module_weights" in info:
            # CAT's `mean_weights` names its experts in the order of each module's weights.
            experts = list(info.get("mean_weights") or {}) or [f"expert {i}" for i in range(
                max(len(w) for w in info["module_weights"].values()))]
            for path, weights in info["module_weights"].items():
                match = _LAYER.match(path)
                layer, module = (match.group(1), match.group(2)) if match else ("-", path)
                rows += [(seed, layer, module, expert, float(w)) for expert, w in zip(experts, weights)]
        else:
            rows += [(seed, "all", "all modules", expert, float(w)) for expert, w in info["expert_weights"].items()]
    frame = pd.DataFrame(rows, columns=LEARNED_COLUMNS)
    return frame.sort_values(["seed", "layer", "module", "expert"], key=_natural, ignore_index=True)


def _natural(column: pd.Series) -> pd.Series:
    """Layer 10 after layer 9, not after layer 1."""
    return column.map(lambda v: (0, int(v), "") if str(v).isdigit() else (1, 0, str(v)))


def load_scores(reader: ResultsReader, suite: str) -> pd.DataFrame:
    """Every metric of every ok run of `suite`."""
    query = (
        select(Score.run_id, Score.metric, Score.value, Score.stderr, Score.n_samples, Score.primary)
        .join(Run, Run.id == Score.run_id)
        .where(Run.suite == suite, Run.status == "ok")
    )
    with reader.engine.connect() as connection:
        rows = connection.execute(query).all()
    return _frame(rows, ["run_id", "metric", "value", "stderr", "n_samples", "primary"])


def _frame(rows: list, columns: list[str]) -> pd.DataFrame:
    """Rows of a SELECT as a frame, built column by column (several times faster than by rows)."""
    values = list(zip(*rows)) if rows else [[] for _ in columns]
    return pd.DataFrame({name: pd.Series(list(column), dtype=object if not rows else None)
                         for name, column in zip(columns, values)})


def primary_metric_of(scores: pd.DataFrame, runs: pd.DataFrame) -> dict[str, str]:
    """The headline metric per task: the one stored as primary, else the task's declared one,
    else the first by name (so a task is never shown twice under two metrics)."""
    merged = scores.merge(runs[["run_id", "task"]], on="run_id")
    chosen: dict[str, str] = {}
    for task, group in merged.groupby("task"):
        flagged = sorted(set(group.loc[group["primary"].astype(bool), "metric"]))
        declared = task_meta(str(task)).primary_metric
        metrics = sorted(set(group["metric"]))
        chosen[str(task)] = flagged[0] if flagged else declared if declared in metrics else metrics[0]
    return chosen


def primary_scores(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per ok run: the run and its task's headline metric."""
    ok = runs[runs["status"] == "ok"]
    if ok.empty or scores.empty:
        return ok.assign(metric=pd.Series(dtype=object), value=pd.Series(dtype=float),
                         stderr=pd.Series(dtype=float))
    metric = primary_metric_of(scores, ok)
    joined = ok.merge(scores[["run_id", "metric", "value", "stderr"]], on="run_id")
    return joined[joined["metric"] == joined["task"].map(metric)].reset_index(drop=True)


# ----------------------------------------------------------------------------------- aggregation

CELL_COLUMNS = [
    "label", "method", "params_key", "params", "task", "metric", "mean", "ci_low", "ci_high",
    "half_width", "n_seeds", "seeds", "std", "merge_seconds", "peak_memory_mb", "output_rank",
    "consumes", "base", "method_class", "family",
]


@lru_cache(maxsize=None)
def _interval_factor(n_seeds: int) -> float:
    """t quantile of a 95% interval over n seeds (cached: the bisection is the costly part)."""
    return t_quantile(0.5 + CONFIDENCE / 2, n_seeds - 1)


_Z = statistics.NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
_FIRST = ["method", "params_key", "params", "metric", "consumes", "method_class", "family", "stderr"]


def aggregate(primary: pd.DataFrame) -> pd.DataFrame:
    """One row per (method setting, task): mean over seeds with its 95% interval and costs.

    The interval is `benchmark.results.mean_interval`'s, computed column-wise: Student t over seeds
    (its `t_quantile`), and for a single seed the run's own stderr (a normal interval) or none,
    mapped to bounds within [0, 1] for a share by the same `share_bounds`.
    `mean_interval` itself, called per cell, takes seconds on a large database (its exact
    `statistics.stdev`); a test checks that both agree with `ResultsReader.records()`.
    """
    if primary.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    ordered = primary.sort_values(["label", "task", "seed"], kind="stable").reset_index(drop=True)
    grouped = ordered.groupby(["label", "task"], sort=True)
    cells = grouped.agg(
        n_seeds=("value", "size"), mean=("value", "mean"), std=("value", "std"),
        merge_seconds=("merge_seconds", "mean"), peak_memory_mb=("peak_memory_mb", "mean"),
        output_rank=("output_rank", "max"), lowest=("value", "min"), highest=("value", "max"),
    )
    # The lowest seed's row of each cell (its stderr is the one a single-seed interval uses).
    firsts = ordered.drop_duplicates(["label", "task"]).set_index(["label", "task"])[_FIRST]
    cells = cells.join(firsts)
    seeds, bases = ordered["seed"].to_numpy(), ordered["base"].to_numpy()
    groups = grouped.indices
    cells["seeds"] = [tuple(int(s) for s in seeds[groups[key]]) for key in cells.index]
    cells["base"] = [" + ".join(sorted(set(bases[groups[key]]))) for key in cells.index]
    n = cells["n_seeds"]
    several = n.map(lambda k: _interval_factor(k) if k >= 2 else float("nan")) * cells["std"] / n.pow(0.5)
    single = (_Z * cells["stderr"].astype(float)).fillna(0.0)
    half = several.where(n >= 2, single)
    is_share = (cells["lowest"] >= 0) & (cells["highest"] <= 1)
    low, high = share_bounds(cells["mean"].to_numpy(), half.to_numpy(), is_share.to_numpy())
    cells = cells.assign(ci_low=low, ci_high=high, half_width=(high - low) / 2)
    cells["output_rank"] = cells["output_rank"].astype(float)
    return cells.reset_index()[CELL_COLUMNS]


def samples_frame(samples: list[SampleRow]) -> pd.DataFrame:
    """Per-sample outputs of one run as a frame, in document order."""
    return pd.DataFrame.from_records(
        [s.model_dump(exclude={"extra"}) for s in samples],
        columns=["doc_index", "prompt", "generation", "target", "executed", "correct"],
    )


def category_table(counts: list[CategoryCount], runs: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per method setting (rows, by label) and document category (columns): each run's
    share of right answers in the category, then the mean over its seeds, as the task's headline
    score is a mean over seeds. Empty when no sample carries a category."""
    if not counts:
        return pd.DataFrame()
    frame = pd.DataFrame.from_records([c.model_dump() for c in counts])
    frame["accuracy"] = frame["n_correct"] / frame["n"]
    frame = frame.merge(runs[["run_id", "label"]], on="run_id", how="inner")
    table = frame.pivot_table(index="label", columns="category", values="accuracy", aggfunc="mean")
    table.columns.name = None
    return table
