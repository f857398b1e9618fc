"""Streamlit glue shared by the pages: where the database is, cached reads, the empty state.

Pages call `suite_data()` first; it either returns what they need or renders a helpful message
and stops the page, so no page has to handle a missing or empty database itself. Suite data comes
from `leaderboard.snapshot` (reloaded exactly when runs change); per-run samples, which never
change once stored, are cached for `TTL` seconds to bound memory rather than to stay fresh.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from benchmark.storage import DB_ENV_VAR, resolve_db_url
from leaderboard import provenance, queries, snapshot

TTL = 600


def db_url() -> str:
    """`--db` after `streamlit run app.py --`, else $SOUPBENCH_DB, else ./soupbench.db."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", default=None)
    known, _ = parser.parse_known_args(sys.argv[1:])
    return resolve_db_url(known.db or os.environ.get(DB_ENV_VAR))


def source_note() -> str | None:
    """`--source` after `streamlit run app.py --`: what the database is, when it is not simply the
    user's own (the release's reference results, or those beside the user's runs)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--source", default=None)
    known, _ = parser.parse_known_args(sys.argv[1:])
    return known.source


def suites(url: str) -> list[str]:
    return snapshot.reader(url).suites()


def frames(url: str, suite: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, scores) of one suite (shared frames: never modify them in place)."""
    data = snapshot.suite_frames(url, suite)
    return data.runs, data.scores


def cells(url: str, suite: str, bases: tuple[str, ...] | None = None, verified_only: bool = False) -> pd.DataFrame:
    """Per (method setting, task) aggregates, over the runs on the chosen base models (and, with
    `verified_only`, only built-in runs and those of reproduced submissions)."""
    data = snapshot.suite_frames(url, suite)
    if bases is None and not verified_only:
        return data.cells
    return _cells_on(url, suite, bases, verified_only, data.version)


def shown_runs(data: snapshot.SuiteFrames, bases: tuple[str, ...] | None, verified_only: bool) -> pd.DataFrame:
    """The runs the overview's filters keep: its cells, sources and hidden scores all start here."""
    runs = data.runs if bases is None else data.runs[data.runs["base"].isin(bases)]
    return runs[provenance.verified_runs(runs, data.origins)] if verified_only else runs


@st.cache_data(max_entries=32, show_spinner=False)
def _cells_on(url: str, suite: str, bases: tuple[str, ...] | None, verified_only: bool, version: tuple) -> pd.DataFrame:
    data = snapshot.suite_frames(url, suite)
    return queries.aggregate(queries.primary_scores(shown_runs(data, bases, verified_only), data.scores))


def sources(url: str, suite: str) -> pd.Series:
    """Where each method label's rows came from ("built in", "submitted by ..."), by label."""
    data = snapshot.suite_frames(url, suite)
    return _sources(url, suite, data.version)


@st.cache_data(max_entries=32, show_spinner=False)
def _sources(url: str, suite: str, version: tuple) -> pd.Series:
    data = snapshot.suite_frames(url, suite)
    return provenance.row_sources(data.runs, data.origins, data.hidden)


def hidden_average(url: str, suite: str, tasks: tuple[str, ...], bases: tuple[str, ...] | None = None,
                   verified_only: bool = False) -> pd.Series:
    """Per label, the hidden-set score averaged over `tasks` as the public average is (empty: none)."""
    data = snapshot.suite_frames(url, suite)
    if data.hidden.empty:  # every database before schema 0003, and most after: nothing to compute
        return pd.Series(dtype=float)
    return _hidden_average(url, suite, tasks, bases, verified_only, data.version)


@st.cache_data(max_entries=32, show_spinner=False)
def _hidden_average(url: str, suite: str, tasks: tuple[str, ...], bases: tuple[str, ...] | None,
                    verified_only: bool, version: tuple) -> pd.Series:
    data = snapshot.suite_frames(url, suite)
    runs = shown_runs(data, bases, verified_only)
    metric_of = queries.primary_metric_of(data.scores, runs[runs["status"] == "ok"])
    return provenance.hidden_average(runs, data.hidden, metric_of, list(tasks))


@st.cache_data(ttl=TTL, max_entries=64, show_spinner=False)
def method_source(url: str, submission_id: int) -> tuple[str, str] | None:
    """A submission's method file as its bundle carried it (a stored submission never changes it)."""
    return provenance.method_source(snapshot.reader(url), submission_id)


def categories(url: str, suite: str, task: str) -> pd.DataFrame:
    """Accuracy per method and document category on one task (recounted when runs change)."""
    return _categories(url, suite, task, snapshot.suite_frames(url, suite).version)


@st.cache_data(max_entries=32, show_spinner=False)
def _categories(url: str, suite: str, task: str, version: tuple) -> pd.DataFrame:
    counts = snapshot.reader(url).category_counts(suite, task)
    return queries.category_table(counts, snapshot.suite_frames(url, suite).runs)


@st.cache_data(ttl=TTL, max_entries=256, show_spinner=False)
def samples(url: str, run_id: int) -> pd.DataFrame:
    return queries.samples_frame(snapshot.reader(url).samples(run_id))


@st.cache_data(ttl=TTL, max_entries=256, show_spinner=False)
def isolation(url: str, run_ids: tuple[int, ...]) -> pd.DataFrame:
    """How these runs' programs were confined (a stored run's provenance never changes)."""
    return queries.sandbox_isolation(snapshot.reader(url), list(run_ids))


@st.cache_data(ttl=TTL, max_entries=256, show_spinner=False)
def learned_weights(url: str, run_ids: tuple[int, ...]) -> pd.DataFrame:
    """The weights a learned method found in these runs (a stored run's provenance never changes)."""
    return queries.learned_weights(snapshot.reader(url), list(run_ids))


@dataclass
class SuiteData:
    url: str
    suite: str
    runs: pd.DataFrame  # every run of the suite, ok and failed
    scores: pd.DataFrame
    origins: pd.DataFrame  # runs that came with a submission (`leaderboard.provenance`)
    hidden: pd.DataFrame  # hidden-set scores


def _empty_state(url: str) -> None:
    st.info(
        "**No results yet.** This database holds no runs. Fill it with\n\n"
        f"```bash\nsoupbench run --db {url}\n```\n\n"
        "(the embedded `micro` suite builds its own small model and data on a CPU in minutes), "
        "then reload this page. The *How to submit* page explains how to add your own method.",
        icon=":material/info:",
    )


def connect(report: bool = True) -> tuple[str, list[str]] | None:
    """The database URL and its suites; None (with a message if `report`) if it cannot be read."""
    url = db_url()
    shown = url.split("@")[-1] if "@" in url else url  # never print a password
    try:
        return url, suites(url)
    except (FileNotFoundError, ValueError) as error:
        if report:
            st.error(f"Cannot open the results database: {error}")
            _empty_state(shown)
    except Exception as error:  # a server that is down, a driver that is missing
        if report:
            st.error(f"Cannot read {shown}: {type(error).__name__}: {error}")
    return None


def choose_suite(suite_names: list[str]) -> str:
    """The suite picker (in the entry script's sidebar, so every page shares it, and in the URL)."""
    return pick("Suite", suite_names, "suite", container=st.sidebar,
                help="A base model with its skills, tasks, training recipe and seeds.")


def suite_data() -> SuiteData:
    """What a data page needs, or a message and a stop when there is nothing to show."""
    connected = connect(report=False)
    if connected is None or not connected[1]:
        st.title("SoupBench leaderboard")
        st.caption("Which merge method composes skills best, at what cost, and how sure we are.")
        if connected is None:
            connect(report=True)  # says what is wrong with the database
        else:
            _empty_state(connected[0])
        st.stop()
    url, suite_names = connected
    suite = st.session_state.get("suite") or suite_names[0]
    runs, scores = frames(url, suite)
    if (runs["status"] == "ok").sum() == 0:
        st.warning(f"Suite `{suite}` has only failed runs so far:")
        st.dataframe(runs[["method", "task", "seed", "error"]], hide_index=True)
        _empty_state(url)
        st.stop()
    data = snapshot.suite_frames(url, suite)
    return SuiteData(url, suite, runs, scores, data.origins, data.hidden)


def header(title: str, explanation: str) -> None:
    st.title(title)
    st.caption(explanation)


def pick(label: str, options: list[str], key: str, index: int = 0, container: object = st,
         help: str | None = None) -> str:
    """A selectbox bound to the URL query parameter `key`, so a link opens the same view."""
    return container.selectbox(label, options, index=index, key=key, bind="query-params", help=help)


def stat(container: object, label: str, value: str, note: str | None = None) -> None:
    """A headline number with a grey note under it (no up/down arrow: nothing changed)."""
    container.metric(label, value, note, delta_color="off", delta_arrow="off")


def fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    """Numbers on the site: three decimals, a dash for missing."""
    if value is None or pd.isna(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
