"""Plots: score against cost, composition against retention, score against number of skills."""

from __future__ import annotations

import streamlit as st

from leaderboard import charts, queries, ranking, ui

data = ui.suite_data()
cells = ui.cells(data.url, data.suite)
table = ranking.overview(cells).table
ui.header("Plots", "The trade-offs at a glance. Colour is the method family; hover a point for its numbers.")

st.subheader("Score against merge cost")
st.caption("Average score over tasks against seconds to build the merged model. The dashed line is the "
           "Pareto front: no other method is both cheaper and better than the methods on it.")
points = table.reset_index(drop=True)
st.altair_chart(charts.pareto(points, ranking.pareto_front(points, "merge s", "average")), width="stretch")

st.subheader("Composition against retention")
st.caption("Up: beats the best single expert on tasks that need several skills. Right: keeps each "
           "expert's own skill (1.0 = as good as the expert on its own task).")
both = points.dropna(subset=["composition gain", "retention"])
if both.empty:
    st.info("Needs the single experts (expert-<skill>) and a composite task in this suite.")
else:
    st.altair_chart(charts.gain_vs_retention(both), width="stretch")

st.subheader("Score against number of skills")
st.caption("Mean score over the tasks that need one skill, two skills, ...: a flat line composes well.")
needs = {task: len(queries.task_meta(task).skills) for task in set(cells["task"])}
known = cells[cells["task"].map(needs) > 0].assign(skills=lambda c: c["task"].map(needs))
if known.empty or known["skills"].nunique() < 2:
    st.info("Needs tasks of different numbers of skills whose metadata is installed.")
else:
    by_skills = (known.groupby(["label", "skills"])
                 .agg(score=("mean", "mean"), tasks=("task", lambda t: ", ".join(sorted(t))))
                 .reset_index().rename(columns={"label": "method"}))
    st.altair_chart(charts.score_vs_skills(by_skills), width="stretch")
    unknown = sorted(t for t, n in needs.items() if n == 0)
    if unknown:
        st.caption(f"Left out (no task metadata installed): {', '.join(unknown)}.")
