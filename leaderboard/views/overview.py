"""Overview: every method against every task of a suite, with intervals, ranks, gains and costs."""

from __future__ import annotations

import streamlit as st

from leaderboard import board_html, queries, ranking, ui

data = ui.suite_data()
ui.header(
    "SoupBench leaderboard",
    f"Suite `{data.suite}`: which merge method composes skills best, at what cost, and how sure we "
    f"are. Each cell: mean over seeds ± half the width of its {queries.INTERVAL}, then the rank on "
    "that task. "
    "Composite tasks (needing several skills) come first; sort and filter in the sidebar; click a "
    "method for its page.",
)

ok = data.runs[data.runs["status"] == "ok"]
every_cell = ui.cells(data.url, data.suite)
bases = sorted(set(ok["base"]))
families = sorted(set(every_cell["family"]))
consumption = sorted(set(every_cell["consumes"]), key=list(queries.CONSUMES_LABELS).index
                     if set(every_cell["consumes"]) <= set(queries.CONSUMES_LABELS) else str)

with st.sidebar:
    st.markdown("**Filter the table**")
    chosen_bases = st.multiselect("Base model", bases, default=bases)
    chosen_families = st.multiselect("Method family", families, default=families)
    chosen_consumes = st.multiselect("Consumes (beyond the experts)", consumption, default=consumption,
                                     format_func=queries.consumes_label)
    verified_only = st.toggle("verified rows only", key="verified_only",
                              help="Built-in rows, and submissions whose re-run by the board's keeper "
                                   "reproduced every sample; hides submissions not (yet) reproduced.")

chosen = None if chosen_bases == bases else tuple(chosen_bases)
cells = ui.cells(data.url, data.suite, chosen, verified_only)
if cells.empty:
    st.info("No row matches these filters; widen them in the sidebar.")
    st.stop()
tasks = ranking.ordered_tasks(list(cells["task"]))
hidden = ui.hidden_average(data.url, data.suite, tuple(tasks), chosen, verified_only)
sort_keys = {"rank (average)": "rank", **{f"task: {t}": t for t in tasks}, "composition gain": "composition gain",
             "retention": "retention", "merge cost": "merge s", **({"hidden set": "hidden"} if len(hidden) else {})}
sort_by = st.sidebar.selectbox("Sort by", list(sort_keys), key="sort", help="Best first.")
ov = ranking.overview(cells, families=chosen_families, consumes=chosen_consumes, sort_by=sort_keys[sort_by],
                      sources=ui.sources(data.url, data.suite), hidden=hidden)
if ov.table.empty:
    st.info("No method matches these filters; widen them in the sidebar.")
    st.stop()

if len(chosen_bases) > 1:
    st.warning(f"The runs of suite `{data.suite}` use {len(chosen_bases)} base models and the means below pool "
               "them; pick one base model in the sidebar to compare like with like.")
table = ov.table
top = table.sort_values("rank").iloc[0]
headline = ov.tasks[0]
best_on_headline = table[headline].idxmax()
n_failed = int((data.runs["status"] == "failed").sum())
low, high = int(table["seeds"].min()), int(table["seeds"].max())
stats = [
    ("Top method (average)", str(top["method"]), f"average {ui.fmt(top['average'])}"),
    (f"Best on {headline}", str(best_on_headline),
     f"{ui.fmt(table.at[best_on_headline, headline])} ± {ui.fmt(ov.half_width.at[best_on_headline, headline])}"),
    ("Methods × tasks", f"{len(table)} × {len(ov.tasks)}",
     f"{low} seeds per cell" if low == high else f"{low}–{high} seeds per cell"),
    ("Runs stored", f"{len(ok):,}", f"{n_failed} failed (not counted)" if n_failed else "none failed"),
]
help = {
    "rank": "Rank by average over the tasks shown (1 = best).",
    "uses": "What the method consumes beyond the experts.",
    "seeds": "Seeds per cell (fewest over the tasks).",
    "source": "Built in (run by the board), or submitted: by whom, and how far the keeper verified it.",
    "average": "Mean over the tasks shown of each task's headline metric.",
    "hidden": "The keeper's hidden eval set (fresh documents from a secret seed): the same mean over tasks "
              "and seeds as the average, where the method was scored on it.",
    "composition gain": "On composite tasks: score minus the best single expert's score (> 0: composes).",
    "retention": "On each skill's own task: score / that skill's expert score, averaged (1.0: keeps all).",
    "merge s": "Seconds to build the merged model (mean over seeds).",
}
for task in ov.tasks:
    metric = cells.loc[cells["task"] == task, "metric"].iloc[0]
    help[task] = (f"{queries.task_meta(task).display_name} ({metric}): mean ± half the width of its "
                  f"{queries.INTERVAL} over seeds, "
                  "then the rank on this task.")
st.html(board_html.overview_html(ov, help, stats))
st.caption(
    "Highlighted: best in its column (costs: among merges, since base and single experts merge "
    "nothing). Composition gain and retention compare with the experts of this suite even when "
    "the filters hide them. — : not run on every task shown. Columns: "
    + "; ".join(f"**{t}** {queries.task_meta(t).display_name.lower()} "
                f"({cells.loc[cells['task'] == t, 'metric'].iloc[0]})" for t in ov.tasks) + "."
)

failed = data.runs[data.runs["status"] == "failed"]
if not failed.empty:
    with st.expander(f"{len(failed)} failed run(s), not counted in any mean"):
        st.dataframe(failed[["label", "task", "seed", "error"]], hide_index=True)

st.download_button("Download this table (CSV)", table.to_csv(index=False).encode(),
                   file_name=f"soupbench-{data.suite}.csv", mime="text/csv")
st.markdown("**Drill down**")
links = st.columns(len(ov.tasks) + 1)
for column, task in zip(links, ov.tasks):
    column.page_link("views/task.py", label=f"Task: {task}", icon=":material/extension:",
                     query_params={"task": task})
links[-1].page_link("views/compare.py", label="Compare two methods", icon=":material/compare_arrows:")
