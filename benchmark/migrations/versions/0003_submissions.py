"""Submissions: imported result bundles, the runs they brought, and hidden-set scores.

See `benchmark.submission` (submit, import, export, verify) and `benchmark.bundle` (the format).

Revision ID: 0003_submissions
Revises: 0002_cell_claims
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_submissions"
down_revision = "0002_cell_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("submitter", sa.String(200), nullable=False),
        sa.Column("contact", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method_file", sa.String(200), nullable=False),
        sa.Column("method_source", sa.Text(), nullable=False),
        sa.Column("method_source_sha256", sa.String(64), nullable=False),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reproduced_samples", sa.Integer(), nullable=True),
        sa.Column("compared_samples", sa.Integer(), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verification", sa.JSON(), nullable=True),
        sa.CheckConstraint("state IN ('imported', 'reproduced', 'not_reproduced')", name="ck_submissions_state"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("bundle_sha256"),
    )
    op.create_table(
        "submission_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id"),
    )
    op.create_index("ix_submission_runs_submission_id", "submission_runs", ["submission_id"])
    op.create_table(
        "hidden_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("hidden_set", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("stderr", sa.Double(), nullable=True),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("primary", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "hidden_set", "metric", name="uq_hidden_scores_metric"),
    )
    op.create_index("ix_hidden_scores_run_id", "hidden_scores", ["run_id"])


def downgrade() -> None:
    op.drop_table("hidden_scores")
    op.drop_table("submission_runs")
    op.drop_table("submissions")
