"""Where a leaderboard row came from: built in, or submitted (by whom, which bundle, how verified),
and its scores on the keeper's hidden eval sets.

The rows of submitted runs live in `submissions`, `submission_runs` and `hidden_scores` (schema
revision 0003, see `benchmark.storage`). Databases made before that revision, the release's
reference results among them, have none of these tables and must keep rendering as before, so each
read first asks whether the tables exist and otherwise returns empty frames of the same columns:
every function after the reads works on frames alone, and a board without submissions is simply
one whose rows are all "built in".

Like `leaderboard.queries`, this imports nothing of methods, training or streamlit; the reads run
once per change of the data (`leaderboard.snapshot`), never once per row.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import Connection, func, select

from benchmark.results import ResultsReader
from benchmark.storage import HiddenScore, Submission, SubmissionRun, has_submission_tables

BUILT_IN = "built in"
VERIFIED_STATE = "reproduced"
HASH_CHARS = 12  # a bundle's sha256 as shown: enough to tell bundles apart, short enough for a table

ORIGIN_COLUMNS = ["run_id", "submission_id", "bundle_sha256", "submitter", "contact", "created_at",
                  "imported_at", "method_file", "method_source_sha256", "state", "reproduced_samples",
                  "compared_samples", "verified_at"]
HIDDEN_COLUMNS = ["run_id", "hidden_set", "metric", "value", "created_at"]
SIDE_BY_SIDE_COLUMNS = ["task", "metric", "hidden_set", "public", "hidden", "difference", "n_seeds"]


def version(connection: Connection) -> tuple:
    """What changes when a bundle is imported or verified, or hidden scores are stored: one row
    added, a state set (with its `verified_at`), or scores replaced (new ids). Empty without the tables.

    It joins the runs' (count, newest id) in `snapshot.data_version`, so verifying a submission
    reloads the board although no run changed."""
    if not has_submission_tables(connection):
        return ()
    row = connection.execute(select(
        select(func.count(Submission.id)).scalar_subquery(),
        select(func.max(Submission.verified_at)).scalar_subquery(),
        select(func.count(HiddenScore.id)).scalar_subquery(),
        select(func.max(HiddenScore.id)).scalar_subquery(),
    )).one()
    return tuple(row)


# ------------------------------------------------------------------------------------------ reads


def load_origins(reader: ResultsReader, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run of `runs` (a suite's, from `queries.load_runs`) that came in with a
    submission: the run id and its submission's facts (the method's source itself is read only on
    the method page: `method_source`).

    Read from the submission tables alone and matched to the runs here: joining `runs` in SQL would
    walk every run of the suite (SQLite starts from the larger table) to find none on most boards."""
    columns = [Submission.id, Submission.bundle_sha256, Submission.submitter, Submission.contact,
               Submission.created_at, Submission.imported_at, Submission.method_file,
               Submission.method_source_sha256, Submission.state, Submission.reproduced_samples,
               Submission.compared_samples, Submission.verified_at]
    with reader.engine.connect() as connection:
        if not has_submission_tables(connection):
            return _empty(ORIGIN_COLUMNS)
        rows = connection.execute(select(SubmissionRun.run_id, *columns)
                                  .join(Submission, Submission.id == SubmissionRun.submission_id)).all()
    return _of_runs(rows, ORIGIN_COLUMNS, runs)


def load_hidden(reader: ResultsReader, runs: pd.DataFrame) -> pd.DataFrame:
    """Every hidden-set score of an ok run of `runs` (built-in runs can have them too); read as
    `load_origins` reads, from the table alone."""
    with reader.engine.connect() as connection:
        if not has_submission_tables(connection):
            return _empty(HIDDEN_COLUMNS)
        rows = connection.execute(select(HiddenScore.run_id, HiddenScore.hidden_set, HiddenScore.metric,
                                         HiddenScore.value, HiddenScore.created_at)).all()
    return _of_runs(rows, HIDDEN_COLUMNS, runs[runs["status"] == "ok"])


def _of_runs(rows: list, columns: list[str], runs: pd.DataFrame) -> pd.DataFrame:
    """The rows (run id first) that belong to one of `runs`, as a frame (empty: of the same columns)."""
    if not rows:
        return _empty(columns)
    ids = set(runs["run_id"])
    kept = [tuple(row) for row in rows if row[0] in ids]
    return pd.DataFrame(kept, columns=columns) if kept else _empty(columns)


def method_source(reader: ResultsReader, submission_id: int) -> tuple[str, str] | None:
    """(file name, source) of a submission's method, exactly as the bundle carried it."""
    with reader.engine.connect() as connection:
        if not has_submission_tables(connection):
            return None
        row = connection.execute(select(Submission.method_file, Submission.method_source)
                                 .where(Submission.id == submission_id)).first()
    return None if row is None else (row[0], row[1])


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})


# ----------------------------------------------------------------------------------------- frames


def verified_runs(runs: pd.DataFrame, origins: pd.DataFrame) -> pd.Series:
    """True for the runs a "verified rows only" board keeps: built in (no submission), or from a
    submission whose re-run reproduced every sample. Aligned with `runs`."""
    unverified = set(origins.loc[origins["state"] != VERIFIED_STATE, "run_id"])
    return ~runs["run_id"].isin(unverified)


def state_text(state: str, reproduced: object, compared: object) -> str:
    """A submission's verification state in words, with the share of samples its re-run matched."""
    share = (f" ({int(reproduced)}/{int(compared)} samples)"
             if pd.notna(reproduced) and pd.notna(compared) else "")
    return {"imported": "imported, not verified", "reproduced": f"reproduced{share}",
            "not_reproduced": f"not reproduced{share}"}.get(state, state)


def row_sources(runs: pd.DataFrame, origins: pd.DataFrame, hidden: pd.DataFrame) -> pd.Series:
    """The overview's "source" text per method label: "built in", or "submitted by NAME: STATE";
    either followed by ", scored on the hidden set" when any of its runs has hidden scores."""
    if origins.empty and hidden.empty:  # every board before submissions: no per-run work
        return pd.Series(BUILT_IN, index=pd.unique(runs["label"]), dtype=object)
    labels = runs[["run_id", "label"]]
    submitted = origins.merge(labels, on="run_id")
    scored = set(labels.loc[labels["run_id"].isin(set(hidden["run_id"])), "label"])
    by_label: dict[str, list[str]] = {}
    for row in submitted.drop_duplicates(["label", "submission_id"]).sort_values("submission_id").itertuples():
        by_label.setdefault(row.label, []).append(
            f"submitted by {row.submitter}: {state_text(row.state, row.reproduced_samples, row.compared_samples)}")
    texts = {label: "; ".join(by_label.get(label, [])) or BUILT_IN for label in pd.unique(labels["label"])}
    return pd.Series({label: text + (", scored on the hidden set" if label in scored else "")
                      for label, text in texts.items()}, dtype=object)


def submissions_of(origins: pd.DataFrame, run_ids: list[int]) -> pd.DataFrame:
    """The submissions these runs came with, one row each (none: built-in runs), oldest first."""
    rows = origins[origins["run_id"].isin(run_ids)].drop_duplicates("submission_id")
    return rows.drop(columns="run_id").sort_values("submission_id").reset_index(drop=True)


def _hidden_primary(runs: pd.DataFrame, hidden: pd.DataFrame, metric_of: dict[str, str]) -> pd.DataFrame:
    """Hidden scores of the task's public headline metric (so both sides compare the same metric),
    with each run's label, task and seed."""
    joined = hidden.merge(runs[["run_id", "label", "task", "seed"]], on="run_id")
    return joined[joined["metric"] == joined["task"].map(metric_of)]


def _newest_set(rows: pd.DataFrame) -> pd.DataFrame:
    """Per label, only the hidden set scored last: a keeper who changes the secret starts a new set,
    and the overview shows the current one."""
    if rows.empty:
        return rows
    newest = rows.groupby(["label", "hidden_set"])["created_at"].max().reset_index()
    newest = newest.sort_values("created_at").drop_duplicates("label", keep="last")
    return rows.merge(newest[["label", "hidden_set"]], on=["label", "hidden_set"])


def hidden_average(runs: pd.DataFrame, hidden: pd.DataFrame, metric_of: dict[str, str],
                   tasks: list[str]) -> pd.Series:
    """Per label, its hidden-set score averaged as the public "average" is: the mean over seeds per
    task, then the mean over `tasks` (blank if a task has no hidden score). Labels without any
    hidden score are left out."""
    rows = _newest_set(_hidden_primary(runs, hidden, metric_of))
    if rows.empty:
        return pd.Series(dtype=float)
    per_task = rows.groupby(["label", "task"])["value"].mean().unstack("task").reindex(columns=tasks)
    return per_task.mean(axis=1, skipna=False)


def side_by_side(runs: pd.DataFrame, primary: pd.DataFrame, hidden: pd.DataFrame,
                 metric_of: dict[str, str]) -> pd.DataFrame:
    """For one method's runs: per task and hidden set, the public and the hidden mean over the same
    seeds (those scored on that set), so the two numbers differ only in the documents."""
    rows = _hidden_primary(runs, hidden, metric_of)
    if rows.empty:
        return pd.DataFrame(columns=SIDE_BY_SIDE_COLUMNS)
    paired = rows.merge(primary[["run_id", "value"]].rename(columns={"value": "public"}), on="run_id")
    table = paired.groupby(["task", "metric", "hidden_set"]).agg(
        public=("public", "mean"), hidden=("value", "mean"), n_seeds=("seed", "nunique")).reset_index()
    table["difference"] = table["hidden"] - table["public"]
    return table[SIDE_BY_SIDE_COLUMNS]


def short_hash(sha256: str) -> str:
    return str(sha256)[:HASH_CHARS]


def day(moment: object) -> str:
    """A stored time as its UTC date (a bundle's date is what a reader compares)."""
    if moment is None or pd.isna(moment) or not isinstance(moment, datetime):
        return "—"
    return moment.strftime("%Y-%m-%d")
