"""Task page: what the task asks, how every method does on it, and each answer behind the score."""

from __future__ import annotations

import streamlit as st

from leaderboard import charts, queries, ranking, ui

data = ui.suite_data()
cells = ui.cells(data.url, data.suite)
task = ui.pick("Task", ranking.ordered_tasks(list(cells["task"])), "task", container=st.sidebar)
meta = queries.task_meta(task)
rows = ranking.task_table(cells, task)
metric = cells.loc[cells["task"] == task, "metric"].iloc[0]

ui.header(f"{meta.display_name} (`{task}`)",
          f"How each method scores on this task (mean over seeds, {queries.INTERVAL}), and every evaluated "
          "answer behind the score.")
st.markdown(meta.description or "_This task's folder is not installed here, so only its stored "
            "results are shown._")
skills = " ".join(f":blue-badge[{s}]" for s in meta.skills) or "unknown"
st.markdown(f"**Needs skills:** {skills} &nbsp;·&nbsp; **kind:** {meta.kind} &nbsp;·&nbsp; "
            f"**headline metric:** `{metric}`")

st.altair_chart(charts.task_bars(rows, metric), width="stretch")
shown = rows.assign(interval=[f"[{ui.fmt(lo)}, {ui.fmt(hi)}]" for lo, hi in zip(rows["ci_low"], rows["ci_high"])])
st.dataframe(
    shown[["rank", "label", "mean", "half_width", "interval", "n_seeds", "family", "uses"]],
    hide_index=True, key="task_table",
    column_config={
        "rank": st.column_config.NumberColumn("#", width="small"),
        "label": st.column_config.TextColumn("method"),
        "mean": st.column_config.NumberColumn("mean", format="%.3f"),
        "half_width": st.column_config.NumberColumn("±", format="%.3f", help="95% interval half-width"),
        "interval": st.column_config.TextColumn("95% interval"),
        "n_seeds": st.column_config.NumberColumn("seeds", width="small"),
    },
)

by_category = ui.categories(data.url, data.suite, task)
if not by_category.empty:
    st.subheader("Accuracy by kind of question")
    st.caption("Each document's kind as the task names it (in the micro tasks, the operation the story "
               "asks for): the share of right answers per run, mean over seeds. A method right on one "
               "kind only scores about one over the number of kinds.")
    ranked = [label for label in rows["label"] if label in by_category.index]
    st.dataframe(by_category.loc[ranked].reset_index(names="method"), hide_index=True, key="category_table",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in by_category.columns})

st.subheader("Answers, one by one")
st.caption("The stored lm-eval samples of one run: the prompt, what the merged model generated, what "
           "its program printed when executed in the sandbox, and whether that was right.")
task_runs = data.runs[(data.runs["task"] == task) & (data.runs["status"] == "ok")]
left, middle, right = st.columns([2, 1, 1])
with left:
    label = ui.pick("Method", list(rows["label"]), "sample_method")
seeds = sorted(int(s) for s in task_runs.loc[task_runs["label"] == label, "seed"])
seed = middle.selectbox("Seed", seeds, key="sample_seed")
only_wrong = right.toggle("Only wrong answers", key="only_wrong")
run_id = int(task_runs.loc[(task_runs["label"] == label) & (task_runs["seed"] == seed), "run_id"].iloc[0])
samples = ui.samples(data.url, run_id)
if samples.empty:
    st.info("This run stored no per-sample outputs.")
    st.stop()

scored = samples["correct"].dropna()
st.markdown(f"**{int(scored.sum())} of {len(scored)} right** ({scored.mean():.1%}) for `{label}`, "
            f"seed {seed} (run {run_id}).")
view = samples[samples["correct"] == False] if only_wrong else samples  # noqa: E712 (None stays out)
view = view.assign(result=view["correct"].map({True: "right", False: "wrong"}).fillna("not scored"))
columns = ["doc_index", "result", "prompt", "generation", "executed", "target"]
colors = {"right": "background-color: #d3f0dc", "wrong": "background-color: #f8d7da"}
st.dataframe(view[columns].style.map(lambda v: colors.get(v, ""), subset=["result"]), hide_index=True,
             key="samples_table", column_config={"doc_index": st.column_config.NumberColumn("doc", width="small")})
if not view.empty:
    doc = st.selectbox("Read one answer in full", list(view["doc_index"]), key="sample_doc")
    sample = view[view["doc_index"] == doc].iloc[0]
    st.markdown(f"**Document {doc}: {sample['result']}**")
    a, b = st.columns(2)
    a.markdown("Prompt")
    a.code(sample["prompt"], language=None, wrap_lines=True)
    b.markdown("Generation")
    b.code(sample["generation"], language="python" if task != "math" else None, wrap_lines=True)
    a.markdown("Executed result")
    a.code("(not executed)" if sample["executed"] is None else str(sample["executed"]), language=None)
    b.markdown("Reference")
    b.code(sample["target"], language=None, wrap_lines=True)
