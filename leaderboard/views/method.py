"""Method page: what a method is, what it used and cost, and how it scores across tasks and seeds."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from leaderboard import charts, provenance, queries, ranking, ui

data = ui.suite_data()
cells = ui.cells(data.url, data.suite)
ranked = ranking.overview(cells).table
label = ui.pick("Method", list(ranked.index), "method", container=st.sidebar,
                help="Methods of this suite, best average first; a method run with several parameter "
                     "settings appears once per setting.")
runs = data.runs[data.runs["label"] == label]
ok = runs[runs["status"] == "ok"]
first = ok.iloc[0]

ui.header(label, "What the method is, what it consumed, what it cost, and its scores across tasks "
          f"and seeds (mean over seeds with {queries.INTERVAL}; rank among the suite's methods).")
st.markdown(first["description"] or "_No description: the run stored no card and the method's source is not "
            "installed here._")
facts = [f"**family:** {first['family']}", f"**consumes:** {queries.consumes_label(first['consumes'])}"]
if first["paper"]:
    facts.append(f"**paper:** [{first['paper']}]({first['paper']})")
if first["method_class"]:
    facts.append(f"**class:** `{first['method_class']}`")
if pd.notna(first["n_target_examples"]):
    facts.append(f"**target examples used:** {int(first['n_target_examples'])}")
st.markdown(" &nbsp;·&nbsp; ".join(facts))
program_runs = ok[[queries.task_meta(str(task)).executes_programs for task in ok["task"]]]
if not program_runs.empty:  # the isolation its model-written programs ran under, as each run stored it
    confined = ui.isolation(data.url, tuple(int(i) for i in program_runs["run_id"]))
    st.markdown("**programs ran in:** " + "; ".join(
        f"{row.backend} ({row.level}, {row.runs} runs)" if row.backend else f"not recorded ({row.runs} runs)"
        for row in confined.itertuples()))
    weak = confined[confined["level"] == "weak"]  # not recorded: stored before SoupBench recorded it
    if not weak.empty:
        st.warning(f"{weak['runs'].sum()} of its {len(program_runs)} runs that executed the model's programs did "
                   "so without the strong sandbox: those programs could read files of the machine they ran on, "
                   "the task data's answers included.")

submitted = provenance.submissions_of(data.origins, [int(i) for i in runs["run_id"]])
scored_hidden = bool(data.hidden["run_id"].isin(set(ok["run_id"])).any())
if submitted.empty:
    st.markdown(f"**source:** {provenance.BUILT_IN} (run by the board's keeper from SoupBench's own code)"
                + (", scored on the hidden set" if scored_hidden else ""))
for row in submitted.itertuples():  # usually one: a bundle brings one method setting
    state = provenance.state_text(row.state, row.reproduced_samples, row.compared_samples)
    checked = f", verified {provenance.day(row.verified_at)}" if row.state != "imported" else ""
    st.markdown(" &nbsp;·&nbsp; ".join([
        f"**submitted by:** {row.submitter} ({row.contact})",
        f"**bundle:** `{provenance.short_hash(row.bundle_sha256)}` of {provenance.day(row.created_at)}",
        f"**state:** {state}{checked}" + (", scored on the hidden set" if scored_hidden else ""),
    ]))
    source = ui.method_source(data.url, int(row.submission_id))
    if source is not None:
        with st.expander(f"Method source: {source[0]} (sha256 {provenance.short_hash(row.method_source_sha256)})"):
            st.code(source[1], language="python")

params, costs = st.columns([1, 2])
with params:
    st.markdown("**Parameters used**")
    values = json.loads(first["params"])
    if values:
        st.json(values)
    else:
        st.markdown("_none (the method has no parameters)_")
with costs:
    st.markdown("**Costs** (per merge, over seeds)")
    per_seed = ok.drop_duplicates("seed")  # one merge per seed serves every task
    merge = per_seed["merge_seconds"]
    a, b, c = st.columns(3)
    ui.stat(a, "merge seconds", f"{merge.mean():,.2f}",
            f"± {merge.std():,.2f} sd over {len(merge)} seeds" if len(merge) > 1 else "one seed")
    ui.stat(b, "peak memory", f"{per_seed['peak_memory_mb'].max():,.0f} MB", "max over seeds")
    rank = ok["output_rank"].dropna()
    ui.stat(c, "output rank", "—" if rank.empty else f"{int(rank.max())}", "of the merged delta, largest module")

st.subheader("Scores across tasks")
scores = ranking.method_scores(cells, label)
scores = scores.assign(interval=[f"[{ui.fmt(lo)}, {ui.fmt(hi)}]" for lo, hi in zip(scores["ci_low"], scores["ci_high"])],
                       place=[f"{r} of {n}" for r, n in zip(scores["rank"], scores["of"])])
st.dataframe(scores[["task", "metric", "mean", "half_width", "interval", "n_seeds", "std", "place"]],
             hide_index=True, key="method_scores", column_config={
                 "mean": st.column_config.NumberColumn("mean", format="%.3f"),
                 "half_width": st.column_config.NumberColumn("±", format="%.3f", help="95% interval half-width"),
                 "interval": st.column_config.TextColumn("95% interval"),
                 "n_seeds": st.column_config.NumberColumn("seeds"),
                 "std": st.column_config.NumberColumn("sd over seeds", format="%.3f"),
                 "place": st.column_config.TextColumn("rank", help="Among this suite's methods on the task."),
             })

if scored_hidden:  # the same merges, scored by the keeper on documents no submitter has seen
    st.subheader("Public and hidden scores")
    metric_of = queries.primary_metric_of(data.scores, ok)
    primary = queries.primary_scores(ok, data.scores)
    order = list(scores["task"])  # the scores table's order: composite tasks first
    both = provenance.side_by_side(ok, primary, data.hidden, metric_of)
    both = both.sort_values(["task", "hidden_set"], key=lambda c: c.map(order.index) if c.name == "task" else c)
    st.caption("Per task and hidden set: the mean over the seeds scored on that set, on the public documents "
               "and on the hidden ones (fresh documents generated from a seed only the keeper holds; the set is "
               "named by a digest of it). A hidden score well below the public one suggests the method fits the "
               "public documents rather than the skills.")
    st.dataframe(both, hide_index=True, key="hidden_scores", column_config={
        "public": st.column_config.NumberColumn("public mean", format="%.3f"),
        "hidden": st.column_config.NumberColumn("hidden mean", format="%.3f"),
        "difference": st.column_config.NumberColumn("hidden − public", format="%+.3f"),
        "hidden_set": st.column_config.TextColumn("hidden set"),
        "n_seeds": st.column_config.NumberColumn("seeds"),
    })

learned = ui.learned_weights(data.url, tuple(int(i) for i in ok["run_id"]))
if not learned.empty:  # a learned method (CAT, LoRAHub): where it put its weight
    st.subheader("Learned weights")
    seeds = learned["seed"].nunique()
    st.caption(f"The weight the method learned for each expert, per layer and module: the mean over {seeds} "
               f"seed{'s' if seeds > 1 else ''} (the tooltip gives the lowest and highest seed). "
               + ("One weight per expert serves every module." if set(learned["layer"]) == {"all"} else ""))
    st.altair_chart(charts.learned_weights_heatmap(learned))

st.subheader("Seeds' spread")
st.caption("Each dot is one seed's score; the tick is the mean and the grey bar its 95% interval.")
seed_rows = queries.primary_scores(data.runs[data.runs["label"] == label], data.scores)
st.altair_chart(charts.seed_spread(seed_rows[["task", "seed", "value"]], scores), width="stretch")
wide = seed_rows.pivot_table(index="task", columns="seed", values="value").reindex(list(scores["task"]))
wide.columns = [f"seed {s}" for s in wide.columns]
st.dataframe(wide.style.format("{:.3f}"), key="seed_table")

failed = runs[runs["status"] == "failed"]
if not failed.empty:
    with st.expander(f"{len(failed)} failed run(s), not counted in any mean"):
        st.dataframe(failed[["task", "seed", "error"]], hide_index=True)
st.page_link("views/compare.py", label=f"Compare {label} with another method", icon=":material/compare_arrows:",
             query_params={"a": label})
