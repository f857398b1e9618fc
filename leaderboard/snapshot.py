"""A process-wide cache of each suite's runs, checked against the database on every page view.

Why not a time-to-live cache: a TTL either serves stale results (runs that `soupbench run` just
stored stay invisible until it expires) or recomputes needlessly when it expires with nothing new.
Here every view asks the database one cheap question, "how many runs, and the newest id?", and
reloads the suite only when the answer changed. A new run gets a new id and a replaced failed run
too, so the answer changes exactly when the data does. Where the database has submissions
(`leaderboard.provenance`), the question also covers them: verifying a bundle changes the board
without adding a run.

Why process-wide rather than `st.cache_data`: `soupbench leaderboard` fills it for every suite
while the server starts (see `leaderboard.serve`), so even the first visitor gets a warm page;
Streamlit's caches only exist once its runtime runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import func, select

from benchmark.results import ResultsReader, open_readonly
from benchmark.storage import Run
from leaderboard import provenance, queries

_lock = threading.Lock()
_readers: dict[str, ResultsReader] = {}
_suites: dict[tuple[str, str], SuiteFrames] = {}


@dataclass(frozen=True)
class SuiteFrames:
    """What every page of a suite starts from (shared: pages must not modify these frames)."""

    version: tuple
    runs: pd.DataFrame  # every run, ok and failed
    scores: pd.DataFrame
    cells: pd.DataFrame  # aggregates over all base models
    origins: pd.DataFrame  # the runs that came with a submission, with its facts (empty: all built in)
    hidden: pd.DataFrame  # hidden-set scores of the suite's runs (empty before schema 0003)


def reader(url: str) -> ResultsReader:
    """One read-only connection pool per database URL, opened on first use."""
    with _lock:
        if url not in _readers:
            _readers[url] = open_readonly(url)
        return _readers[url]


def forget(url: str) -> None:
    """Close the reader of `url` and drop its cached frames (a database about to be dropped or
    replaced: a pooled connection left open would keep PostgreSQL from dropping it)."""
    with _lock:
        cached = _readers.pop(url, None)
        for key in [key for key in _suites if key[0] == url]:
            del _suites[key]
    if cached is not None:
        cached.close()


def data_version(url: str, suite: str) -> tuple:
    """(number of runs, highest run id) of a suite, then `provenance.version` of the submissions:
    changes whenever its runs, or what is known of where they came from, change."""
    query = select(func.count(Run.id), func.max(Run.id)).where(Run.suite == suite)
    with reader(url).engine.connect() as connection:
        count, newest = connection.execute(query).one()
        submitted = provenance.version(connection)
    return int(count), int(newest or 0), *submitted


def suite_frames(url: str, suite: str) -> SuiteFrames:
    """The suite's frames, reloaded only when its runs changed since the last call."""
    version = data_version(url, suite)
    cached = _suites.get((url, suite))
    if cached is not None and cached.version == version:
        return cached
    runs, scores = queries.load_runs(reader(url), suite), queries.load_scores(reader(url), suite)
    cells = queries.aggregate(queries.primary_scores(runs, scores))
    frames = SuiteFrames(version, runs, scores, cells, provenance.load_origins(reader(url), runs),
                         provenance.load_hidden(reader(url), runs))
    with _lock:
        _suites[(url, suite)] = frames
    return frames


def prefetch(url: str) -> None:
    """Load every suite of the database (what the first visitor would otherwise wait for)."""
    for suite in reader(url).suites():
        suite_frames(url, suite)
