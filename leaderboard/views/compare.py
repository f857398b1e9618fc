"""Compare: two methods side by side, per task, with a paired bootstrap over the same items."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from leaderboard import charts, ranking, stats, ui

data = ui.suite_data()
cells = ui.cells(data.url, data.suite)
labels = list(ranking.overview(cells).table.index)  # best average first
ui.header("Compare two methods",
          "Per task, the two methods' outcomes on the very same items (same seed, same document) are "
          f"paired and their mean difference bootstrapped ({stats.RESAMPLES:,} resamples, fixed seed). "
          "The difference is significant when its 95% interval excludes zero.")
if len(labels) < 2:
    st.info("Only one method is stored in this suite; run another to compare.")
    st.stop()
left, right = st.columns(2)
with left:
    a = ui.pick("Method A", labels, "a", index=0)
with right:
    b = ui.pick("Method B", labels, "b", index=1)
if a == b:
    st.warning("Pick two different methods.")
    st.stop()

ok = data.runs[data.runs["status"] == "ok"]


def outcomes(label: str, task: str) -> dict[tuple[int, int], bool | None]:
    """(seed, doc_index) -> right or wrong, over every seed of this method on this task."""
    found: dict[tuple[int, int], bool | None] = {}
    for run in ok[(ok["label"] == label) & (ok["task"] == task)].itertuples():
        samples = ui.samples(data.url, int(run.run_id))
        for doc, correct in zip(samples["doc_index"], samples["correct"]):
            found[(int(run.seed), int(doc))] = None if pd.isna(correct) else bool(correct)
    return found


rows, missing = [], []
for task in ranking.ordered_tasks(list(cells["task"])):
    paired_a, paired_b = stats.pair_items(outcomes(a, task), outcomes(b, task))
    if len(paired_a) == 0:
        missing.append(task)
        continue
    result = stats.paired_bootstrap(paired_a, paired_b)
    verdict = ("A better" if result.ci_low > 0 else "B better") if result.significant \
        else "no significant difference"
    rows.append({"task": task, "items": result.n_items, "A": result.mean_a, "B": result.mean_b,
                 "difference": result.difference, "ci_low": result.ci_low, "ci_high": result.ci_high,
                 "p": result.p_value, "verdict": verdict})

if not rows:
    st.info(f"`{a}` and `{b}` share no scored items (same seed and document) on any task.")
    st.stop()
table = pd.DataFrame(rows)
floor = 1 / stats.RESAMPLES
shown = table.assign(
    interval=[f"[{ui.fmt(lo, signed=True)}, {ui.fmt(hi, signed=True)}]" for lo, hi in zip(table["ci_low"], table["ci_high"])],
    p_text=[f"< {floor:g}" if p < floor else f"{p:.4f}" for p in table["p"]],
    verdict=[v.replace("A better", f"{a} better").replace("B better", f"{b} better") for v in table["verdict"]],
)
st.dataframe(shown[["task", "items", "A", "B", "difference", "interval", "p_text", "verdict"]],
             hide_index=True, key="compare_table", column_config={
                 "items": st.column_config.NumberColumn("paired items", help="(seed, document) pairs both scored"),
                 "A": st.column_config.NumberColumn(f"A: {a}", format="%.3f"),
                 "B": st.column_config.NumberColumn(f"B: {b}", format="%.3f"),
                 "difference": st.column_config.NumberColumn("A − B", format="%+.3f"),
                 "interval": st.column_config.TextColumn("95% interval"),
                 "p_text": st.column_config.TextColumn("p (two-sided)"),
             })
st.altair_chart(charts.differences(table, a, b), width="stretch")
for row in shown.itertuples():
    st.markdown(f"- **{row.task}**: {a} − {b} = {row.difference:+.3f}, 95% interval {row.interval} "
                f"over {row.items} paired items → **{row.verdict}**.")
if missing:
    st.caption(f"Not compared (no shared scored items): {', '.join(missing)}.")
