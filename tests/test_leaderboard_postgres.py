"""The leaderboard reads a shared PostgreSQL database exactly as it reads SQLite: every frame its
pages are drawn from (runs, scores, aggregated cells, submissions, hidden-set scores, learned
weights, sandbox isolation, per-category counts) is the same from both servers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from leaderboard import queries, snapshot
from tests.leaderboard_fixtures import METHODS, SUBMISSION_SEEDS, fill_grid, fill_submissions

# Set by the database, not by the data: when a row was written, and bundle timestamps stored as text.
VOLATILE = ("created_at", "imported_at", "verified_at")


def _frames(url: str) -> dict[str, pd.DataFrame]:
    frames = snapshot.suite_frames(url, "micro")
    reader = snapshot.reader(url)
    ids = frames.runs["id"].tolist() if "id" in frames.runs else frames.runs.index.tolist()
    out = {"runs": frames.runs, "scores": frames.scores, "cells": frames.cells, "origins": frames.origins,
           "hidden": frames.hidden, "weights": queries.learned_weights(reader, ids),
           "isolation": queries.sandbox_isolation(reader, ids),
           "categories": queries.category_table(reader.category_counts("micro", "math_code"), frames.runs)}
    return {name: frame.drop(columns=[c for c in VOLATILE if c in frame.columns]).reset_index(drop=True)
            for name, frame in out.items()}


def test_every_leaderboard_frame_is_the_same_from_sqlite_and_postgresql(tmp_path: Path, pg_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'board.db'}"
    for url in (sqlite_url, pg_url):
        fill_submissions(url)
        fill_grid(url, methods=METHODS[4:], seeds=SUBMISSION_SEEDS)  # learned weights (CAT) and a failed run too
    try:
        from_sqlite, from_postgres = _frames(sqlite_url), _frames(pg_url)
    finally:
        for url in (sqlite_url, pg_url):
            snapshot.forget(url)
    assert all(len(frame) > 0 for frame in from_sqlite.values()), {k: len(v) for k, v in from_sqlite.items()}
    for name, frame in from_sqlite.items():
        pd.testing.assert_frame_equal(frame, from_postgres[name], check_dtype=False, obj=name)
