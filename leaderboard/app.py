"""SoupBench leaderboard: the entry script that `soupbench leaderboard` hands to `streamlit run`.

It sets the page frame (title, wide layout, the suite picker every page shares) and routes to the
pages in `leaderboard/views/`. The database URL comes from `-- --db URL` after the script, else
$SOUPBENCH_DB, else ./soupbench.db; it is opened read-only (see `benchmark.results`).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from leaderboard import ui

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="SoupBench leaderboard", page_icon=":material/leaderboard:", layout="wide")

PAGES = [
    st.Page(VIEWS / "overview.py", title="Overview", icon=":material/leaderboard:", default=True),
    st.Page(VIEWS / "task.py", title="Tasks", icon=":material/extension:", url_path="task"),
    st.Page(VIEWS / "method.py", title="Methods", icon=":material/science:", url_path="method"),
    st.Page(VIEWS / "compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page(VIEWS / "plots.py", title="Plots", icon=":material/scatter_plot:", url_path="plots"),
    st.Page(VIEWS / "submit.py", title="How to submit", icon=":material/upload_file:", url_path="submit"),
]
page = st.navigation(PAGES)

st.sidebar.markdown("**SoupBench** · merging LoRA experts into skill compositions")
if ui.source_note():
    st.sidebar.caption(ui.source_note())
connected = ui.connect(report=False)
if connected is not None and connected[1]:
    ui.choose_suite(connected[1])
page.run()
