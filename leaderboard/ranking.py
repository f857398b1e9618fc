"""The leaderboard's rankings: ranks, averages, composition gain, retention, best-per-column marks.

Pure pandas over the cells of `queries.aggregate` (one row per method setting and task), so the
numbers are tested without Streamlit. Definitions (shown on the site as well):

- rank per task: 1 = highest mean among the rows shown; equal means share the better rank;
- average: mean over the tasks shown of the task's headline metric (blank if a task is missing);
- composition gain: on each composite task, the method's mean minus the best single expert's
  mean on that task, averaged over the composite tasks (> 0: the merge composes skills);
- retention: on each skill's own task, the method's mean divided by that skill's expert's mean,
  averaged over the skills (1.0: keeps every expert's skill);
- hidden: where the keeper scored a method on a hidden eval set, that score averaged as the
  average is (over the tasks shown; `leaderboard.provenance.hidden_average`).

Gain and retention compare with the experts of the same suite and base, so they are computed
before the family / consumption filters and survive hiding the experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from leaderboard.queries import EXPERT_PREFIX, consumes_label, is_reference, task_meta

ROUND = 12  # means equal up to float noise share a rank


def ordered_tasks(tasks: list[str]) -> list[str]:
    """Composite tasks first (the benchmark's point), then the skills' own tasks, by name."""
    return sorted(set(tasks), key=lambda t: (task_meta(t).kind != "composite", t))


def descending_rank(values: pd.Series) -> pd.Series:
    """1 = best; ties share the better rank (competition ranking); missing stays missing."""
    return values.round(ROUND).rank(method="min", ascending=False).astype("Int64")


def composite_tasks(tasks: list[str], methods: set[str]) -> list[str]:
    """Tasks that need several skills: declared so, or (not installed) without an own expert."""
    chosen = []
    for task in tasks:
        kind = task_meta(task).kind
        if kind == "composite" or (kind == "unknown" and f"{EXPERT_PREFIX}{task}" not in methods):
            chosen.append(task)
    return chosen


@dataclass
class Overview:
    """The overview table (numbers) with what its cells display beside them."""

    table: pd.DataFrame  # index: method label; numeric columns, one per task among them
    tasks: list[str]
    half_width: pd.DataFrame  # index label, columns tasks
    task_rank: pd.DataFrame  # index label, columns tasks
    best: pd.DataFrame  # bool, same index and columns as table

    @property
    def cell_text(self) -> pd.DataFrame:
        """What a task cell shows: mean ± 95% half-width, then the rank."""
        text = {}
        for task in self.tasks:
            means, halves, ranks = self.table[task], self.half_width[task], self.task_rank[task]
            text[task] = ["—" if pd.isna(m) else f"{m:.3f} ± {h:.3f}  #{r}"
                          for m, h, r in zip(means.tolist(), halves.tolist(), ranks.tolist())]
        return pd.DataFrame(text, index=self.table.index, columns=self.tasks)


SORT_ASCENDING = ("rank", "merge s", "peak MB")  # rank and costs: small is good


def overview(cells: pd.DataFrame, families: list[str] | None = None,
             consumes: list[str] | None = None, sort_by: str = "rank",
             sources: pd.Series | None = None, hidden: pd.Series | None = None) -> Overview:
    """Methods against tasks, filtered to the chosen families and consumption kinds, best first
    by `sort_by` (a column: "rank", a task, "composition gain", "retention", "merge s", ...).

    `sources` (label -> "built in" / "submitted by ...") adds the "source" column; `hidden` (label
    -> hidden-set average) the "hidden" column, when any label has one."""
    tasks = ordered_tasks(list(cells["task"]))
    wide = cells.pivot_table(index="label", columns="task", values="mean", aggfunc="first")
    wide = wide.reindex(columns=tasks)
    half = cells.pivot_table(index="label", columns="task", values="half_width", aggfunc="first")
    info = cells.groupby("label").agg(
        method=("method", "first"), family=("family", "first"), consumes=("consumes", "first"),
        base=("base", "first"), seeds=("n_seeds", "min"), merge_s=("merge_seconds", "mean"),
        peak_mb=("peak_memory_mb", "mean"),
    )
    methods = set(info["method"])
    experts = [label for label in wide.index if info.at[label, "method"].startswith(EXPERT_PREFIX)]

    gain = pd.Series(float("nan"), index=wide.index)
    composite = composite_tasks(tasks, methods)
    if experts and composite:
        best_expert = wide.loc[experts, composite].max()
        gain = (wide[composite] - best_expert).mean(axis=1, skipna=False)

    ratios = []
    for skill in tasks:
        own = [e for e in experts if info.at[e, "method"] == f"{EXPERT_PREFIX}{skill}"]
        if own and wide.at[own[0], skill] > 0:
            ratios.append(wide[skill] / wide.at[own[0], skill])
    retention = (pd.concat(ratios, axis=1).mean(axis=1, skipna=False) if ratios
                 else pd.Series(float("nan"), index=wide.index))

    keep = pd.Series(True, index=wide.index)
    if families is not None:
        keep &= info["family"].isin(families)
    if consumes is not None:
        keep &= info["consumes"].isin(consumes)
    shown = wide.index[keep]

    scores = wide.loc[shown]
    average = scores.mean(axis=1, skipna=False)
    table = pd.DataFrame({
        "rank": descending_rank(average),
        "method": list(shown),
        "family": info.loc[shown, "family"],
        "uses": info.loc[shown, "consumes"].map(consumes_label),
        "base": info.loc[shown, "base"],
        "seeds": info.loc[shown, "seeds"].astype("Int64"),
    }, index=shown)
    if sources is not None:
        table.insert(2, "source", sources.reindex(shown).fillna("built in"))
    for task in tasks:
        table[task] = scores[task]
    table["average"] = average
    if hidden is not None and hidden.reindex(shown).notna().any():
        table["hidden"] = hidden.reindex(shown).astype(float)
    table["composition gain"] = gain.loc[shown]
    table["retention"] = retention.loc[shown]
    table["merge s"] = info.loc[shown, "merge_s"]
    table["peak MB"] = info.loc[shown, "peak_mb"]
    sort_by = sort_by if sort_by in table else "rank"  # e.g. "hidden" once the filters hide every such row
    ascending = sort_by in SORT_ASCENDING
    keys = [sort_by, "rank", "method"] if sort_by != "rank" else ["rank", "method"]
    table = table.sort_values(keys, ascending=[ascending, *[True] * (len(keys) - 1)], na_position="last")
    task_rank = pd.DataFrame({t: descending_rank(table[t]) for t in tasks}, index=table.index)
    refs = pd.Series([is_reference(info.at[label, "method"]) for label in table.index], index=table.index)
    return Overview(table, tasks, half.reindex(index=table.index, columns=tasks), task_rank,
                    best_marks(table, tasks, refs))


HIGHER_BETTER = ("average", "hidden", "composition gain", "retention")
LOWER_BETTER = ("merge s", "peak MB")


def best_marks(table: pd.DataFrame, tasks: list[str], reference: pd.Series) -> pd.DataFrame:
    """True where a cell is the best of its column (ties all marked).

    Costs skip base and single experts: they merge nothing, so "cheapest" would always be them.
    """
    best = pd.DataFrame(False, index=table.index, columns=table.columns)
    for column in [*tasks, *(c for c in HIGHER_BETTER if c in table)]:
        values = table[column].round(ROUND)
        if values.notna().any():
            best[column] = values == values.max()
    for column in LOWER_BETTER:
        values = table[column].where(~reference).round(ROUND)
        if values.notna().any():
            best[column] = values == values.min()
    return best


# --------------------------------------------------------------------------- task and method views


def task_table(cells: pd.DataFrame, task: str) -> pd.DataFrame:
    """Methods on one task, best first, with their interval and rank."""
    rows = cells[cells["task"] == task].copy()
    rows["rank"] = descending_rank(rows["mean"])
    rows["uses"] = rows["consumes"].map(consumes_label)
    rows = rows.sort_values(["rank", "label"])
    return rows[["rank", "label", "mean", "ci_low", "ci_high", "half_width", "n_seeds", "family",
                 "uses"]].reset_index(drop=True)


def method_scores(cells: pd.DataFrame, label: str) -> pd.DataFrame:
    """One method setting across tasks, with its rank among all settings on each task."""
    ranked = cells.assign(rank=cells.groupby("task")["mean"].transform(descending_rank),
                          of=cells.groupby("task")["label"].transform("count"))
    rows = ranked[ranked["label"] == label]
    rows = rows.set_index("task").loc[ordered_tasks(list(rows["task"]))].reset_index()
    return rows[["task", "metric", "mean", "ci_low", "ci_high", "half_width", "n_seeds", "std",
                 "rank", "of"]]


def pareto_front(points: pd.DataFrame, cost: str, score: str) -> pd.DataFrame:
    """Points no other point beats on both cost (lower) and score (higher), by cost."""
    ordered = points.dropna(subset=[cost, score]).sort_values([cost, score], ascending=[True, False])
    front, best = [], float("-inf")
    for index, row in ordered.iterrows():
        if row[score] > best:
            front.append(index)
            best = row[score]
    return ordered.loc[front]
