"""The release's reference results beside a user's own runs (`soupbench leaderboard` with a database)."""

from __future__ import annotations

import dataclasses
import sqlite3

from leaderboard_fixtures import METHODS, fill_grid, write_reference_release

from benchmark.release import reference_db_url
from leaderboard.combine import combined_database


def count(url: str, query: str) -> list[tuple]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute(query).fetchall()


def test_the_users_new_cells_join_the_reference_and_shared_cells_stay_the_references(tmp_path, monkeypatch):
    release = tmp_path / "release"
    release.mkdir()
    reference_methods = tuple(m for m in METHODS if m.name != "lorahub")
    fill_grid(f"sqlite:///{release / 'reference.db'}", methods=reference_methods, with_failed=False)
    write_reference_release(release)
    monkeypatch.setenv("SOUPBENCH_RELEASE", str(release))
    user = f"sqlite:///{tmp_path / 'mine.db'}"
    # the user's database: lorahub (new to the board) and a rerun of cat with other numbers
    cat = next(m for m in METHODS if m.name == "cat")
    lorahub = next(m for m in METHODS if m.name == "lorahub")
    worse_cat = dataclasses.replace(cat, quality={t: 0.0 for t in cat.quality})
    fill_grid(user, methods=(lorahub, worse_cat), with_failed=False)

    url, added = combined_database(reference_db_url(), user, tmp_path / "board")
    per_method = dict(count(url, "select method, count(*) from runs group by method"))
    assert added == per_method["lorahub"] == 9  # 3 tasks x 3 seeds, all of the user's lorahub cells
    assert per_method["cat"] == 9  # not doubled
    samples = count(url, "select count(*) from samples s join runs r on r.id = s.run_id where r.method = 'lorahub'")
    assert samples == count(user, "select count(*) from samples s join runs r on r.id = s.run_id "
                                  "where r.method = 'lorahub'")
    reference_cat = count(reference_db_url(), "select s.value from scores s join runs r on r.id = s.run_id "
                                              "where r.method = 'cat' order by r.task, r.seed, s.metric")
    shown_cat = count(url, "select s.value from scores s join runs r on r.id = s.run_id "
                           "where r.method = 'cat' order by r.task, r.seed, s.metric")
    assert shown_cat == reference_cat and any(v > 0 for (v,) in shown_cat)
    # every score and sample points at a run of the combined database
    assert count(url, "select count(*) from scores where run_id not in (select id from runs)") == [(0,)]
    assert count(url, "select count(*) from samples where run_id not in (select id from runs)") == [(0,)]
    # the user's and the release's databases are untouched
    assert "lorahub" not in dict(count(reference_db_url(), "select method, 1 from runs"))
