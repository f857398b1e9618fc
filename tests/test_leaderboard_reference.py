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


def test_submissions_come_along_even_onto_a_reference_made_before_them(tmp_path):
    """The shipped reference (schema before 0003: no submission tables) beside a user's database with
    submissions: the copy gains the tables, the added runs keep their submission, links and hidden
    scores (with the new run ids), and the board reads them."""
    from leaderboard import provenance, snapshot
    from leaderboard_fixtures import HIDDEN_SET, add_submission, soup

    reference = reference_db_url()  # the micro release's own
    assert "submissions" not in {name for (name,) in count(reference, "select name from sqlite_master")}
    user = f"sqlite:///{tmp_path / 'mine.db'}"
    a = add_submission(user, soup("soup_a", .5), "Ada", "reproduced", hidden_shift=-0.1, seeds=(0, 1), n_docs=4)
    add_submission(user, soup("soup_b", .6), "Bob", seeds=(0,), n_docs=4)
    url, added = combined_database(reference, user, tmp_path / "board")
    assert added == 3 * 2 + 3
    assert count(url, "select submitter, state, bundle_sha256 from submissions order by submitter") == [
        ("Ada", "reproduced", a.bundle_sha256), ("Bob", "imported", count(user, "select bundle_sha256 from submissions "
                                                                                "where submitter = 'Bob'")[0][0])]
    assert count(url, "select r.method, count(*) from submission_runs l join runs r on r.id = l.run_id "
                      "join submissions s on s.id = l.submission_id and s.method = r.method group by r.method") == [
        ("soup_a", 6), ("soup_b", 3)]
    hidden = count(url, "select r.task, r.seed, h.value from hidden_scores h join runs r on r.id = h.run_id "
                        f"where h.hidden_set = '{HIDDEN_SET}' and h.\"primary\" order by r.task, r.seed")
    assert hidden == sorted((task, seed, value) for (task, seed), value in a.hidden.items())
    data = snapshot.suite_frames(url, "micro")
    sources = provenance.row_sources(data.runs, data.origins, data.hidden)
    assert sources["soup_b"] == "submitted by Bob: imported, not verified" and sources["cat"] == "built in"
    # and a user database made before submissions adds runs only, leaving the copy as the reference was
    old = f"sqlite:///{tmp_path / 'old.db'}"
    fill_grid(old, methods=tuple(m for m in METHODS if m.name == "lorahub"), with_failed=False)
    with sqlite3.connect(old.removeprefix("sqlite:///")) as conn:
        conn.executescript("drop table hidden_scores; drop table submission_runs; drop table submissions;")
    url, added = combined_database(reference, old, tmp_path / "board-old")
    assert added > 0 and "submissions" not in {name for (name,) in count(url, "select name from sqlite_master")}
