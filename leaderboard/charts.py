"""Altair charts: where a picture answers faster than a table.

Each function takes a tidy frame from `queries`/`ranking` and returns a chart; none reads the
database. Colour always means method family, with one fixed palette, so a method keeps its colour
from chart to chart.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

FAMILY_ORDER = ["baseline", "linear", "sparsified", "low-rank", "concatenation", "data", "other"]
COST_FLOOR = 0.01  # base and single experts merge nothing; a log axis needs them above zero
PALETTE = ["#8c8c8c", "#4e79a7", "#f28e2b", "#b07aa1", "#e15759", "#59a14f", "#76b7b2"]


def _family_color(families: pd.Series) -> alt.Color:
    extra = sorted(set(families) - set(FAMILY_ORDER))
    domain = [f for f in FAMILY_ORDER if f in set(families)] + extra
    colors = [PALETTE[FAMILY_ORDER.index(f)] if f in FAMILY_ORDER else PALETTE[-1] for f in domain]
    return alt.Color("family:N", scale=alt.Scale(domain=domain, range=colors), title="family")


def task_bars(rows: pd.DataFrame, metric: str) -> alt.LayerChart:
    """Methods on one task: bar = mean over seeds, whisker = 95% interval, best on top."""
    order = list(rows.sort_values("mean", ascending=False)["label"])
    base = alt.Chart(rows).encode(y=alt.Y("label:N", sort=order, title=None))
    tooltip = [alt.Tooltip("label:N", title="method"), alt.Tooltip("mean:Q", format=".3f"),
               alt.Tooltip("ci_low:Q", title="95% low", format=".3f"),
               alt.Tooltip("ci_high:Q", title="95% high", format=".3f"), alt.Tooltip("n_seeds:Q", title="seeds")]
    bars = base.mark_bar(opacity=0.85).encode(
        x=alt.X("mean:Q", title=f"{metric} (mean over seeds, 95% interval)"),
        color=_family_color(rows["family"]), tooltip=tooltip)
    whiskers = base.mark_rule(color="#222", strokeWidth=1.5).encode(x="ci_low:Q", x2="ci_high:Q")
    labels = base.mark_text(align="left", dx=4, dy=-8, fontSize=11, color="#333").encode(
        x="ci_high:Q", text=alt.Text("mean:Q", format=".3f"))
    return (bars + whiskers + labels).properties(height=max(34 * len(rows), 120))


def seed_spread(per_seed: pd.DataFrame, summary: pd.DataFrame) -> alt.LayerChart:
    """One method's scores per seed on each task (dots), its mean (tick) and 95% interval (bar)."""
    dots = alt.Chart(per_seed).mark_circle(size=70, opacity=0.8).encode(
        x=alt.X("value:Q", title="score per seed"), y=alt.Y("task:N", title=None),
        color=alt.Color("seed:N", title="seed"),
        tooltip=["task", "seed", alt.Tooltip("value:Q", format=".3f")])
    interval = alt.Chart(summary).mark_rule(strokeWidth=2, color="#888").encode(
        x="ci_low:Q", x2="ci_high:Q", y="task:N")
    mean = alt.Chart(summary).mark_tick(thickness=3, size=22, color="#222").encode(
        x="mean:Q", y="task:N", tooltip=[alt.Tooltip("mean:Q", format=".3f")])
    return (interval + dots + mean).properties(height=max(60 * len(summary), 120))


def pareto(points: pd.DataFrame, front: pd.DataFrame) -> alt.LayerChart:
    """Average score against merge seconds; the line joins the methods nothing beats on both."""
    x = alt.X("cost:Q", title=f"merge cost (seconds, log scale; under {COST_FLOOR} s drawn at {COST_FLOOR})",
              scale=alt.Scale(type="log", nice=True), axis=alt.Axis(format="~g"))
    points = points.assign(cost=points["merge s"].clip(lower=COST_FLOOR))
    front = front.assign(cost=front["merge s"].clip(lower=COST_FLOOR))
    y = alt.Y("average:Q", title="average score over tasks")
    dots = alt.Chart(points).mark_circle(size=110).encode(
        x=x, y=y, color=_family_color(points["family"]),
        tooltip=["method", "family", alt.Tooltip("average:Q", format=".3f"),
                 alt.Tooltip("merge s:Q", format=",.2f")])
    names = alt.Chart(points).mark_text(align="left", dx=8, fontSize=11).encode(x=x, y=y, text="method")
    line = alt.Chart(front).mark_line(strokeDash=[5, 3], color="#555").encode(x=x, y=y, order="cost:Q")
    return (line + dots + names).properties(height=380)


def gain_vs_retention(points: pd.DataFrame) -> alt.LayerChart:
    """Composition (gain over the best expert on composite tasks) against skill retention."""
    x = alt.X("retention:Q", title="retention of the experts' own skills (1 = all kept)")
    y = alt.Y("composition gain:Q", title="composition gain over the best expert")
    dots = alt.Chart(points).mark_circle(size=110).encode(
        x=x, y=y, color=_family_color(points["family"]),
        tooltip=["method", alt.Tooltip("retention:Q", format=".3f"),
                 alt.Tooltip("composition gain:Q", format="+.3f")])
    names = alt.Chart(points).mark_text(align="left", dx=8, fontSize=11).encode(x=x, y=y, text="method")
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#999", strokeDash=[4, 4]).encode(y="y:Q")
    one = alt.Chart(pd.DataFrame({"x": [1.0]})).mark_rule(color="#999", strokeDash=[4, 4]).encode(x="x:Q")
    return (zero + one + dots + names).properties(height=380)


def score_vs_skills(rows: pd.DataFrame) -> alt.LayerChart:
    """Mean score by how many skills a task needs: how fast each method degrades with composition."""
    x = alt.X("skills:O", title="skills the task needs", axis=alt.Axis(labelAngle=0))
    y = alt.Y("score:Q", title="mean score over those tasks")
    color = alt.Color("method:N", title="method")
    lines = alt.Chart(rows).mark_line(point=True).encode(
        x=x, y=y, color=color, tooltip=["method", "skills", alt.Tooltip("score:Q", format=".3f"), "tasks"])
    return lines.properties(height=380)


def differences(rows: pd.DataFrame, a: str, b: str) -> alt.LayerChart:
    """Paired difference A - B per task with its bootstrap interval; zero is no difference."""
    y = alt.Y("task:N", title=None, sort=list(rows["task"]))
    rule = alt.Chart(rows).mark_rule(strokeWidth=3).encode(
        x=alt.X("ci_low:Q", title=f"{a} − {b} (paired, 95% bootstrap interval)"), x2="ci_high:Q", y=y,
        color=alt.Color("verdict:N", title=None,
                        scale=alt.Scale(domain=["A better", "B better", "no significant difference"],
                                        range=["#59a14f", "#e15759", "#8c8c8c"])))
    dot = alt.Chart(rows).mark_circle(size=90, color="#222").encode(
        x="difference:Q", y=y, tooltip=["task", alt.Tooltip("difference:Q", format="+.3f"),
                                        alt.Tooltip("p:Q", format=".4f")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="#555", strokeDash=[4, 4]).encode(x="x:Q")
    return (zero + rule + dot).properties(height=max(50 * len(rows), 120))


def learned_weights_heatmap(weights: pd.DataFrame) -> alt.Chart:
    """A learned method's weight per layer (rows) and module (columns), one panel per expert: the
    mean over seeds, each seed's value in the tooltip's spread. Where CAT puts its weight (which
    expert, which layers) is what its readers ask about."""
    cells = (weights.groupby(["expert", "layer", "module"], sort=False)["weight"]
             .agg(weight="mean", low="min", high="max", seeds="size").reset_index())
    layers = list(dict.fromkeys(weights["layer"]))
    modules = list(dict.fromkeys(weights["module"]))
    return alt.Chart(cells).mark_rect().encode(
        x=alt.X("module:N", sort=modules, title="module"),
        y=alt.Y("layer:N", sort=layers, title="layer"),
        color=alt.Color("weight:Q", title="weight (mean over seeds)", scale=alt.Scale(scheme="viridis")),
        column=alt.Column("expert:N", title="expert"),
        tooltip=["expert", "layer", "module", alt.Tooltip("weight:Q", format=".3f"),
                 alt.Tooltip("low:Q", title="lowest seed", format=".3f"),
                 alt.Tooltip("high:Q", title="highest seed", format=".3f"), alt.Tooltip("seeds:Q")],
    ).properties(width=max(28 * len(modules), 120), height=max(22 * len(layers), 40))
