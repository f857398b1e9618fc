"""Baseline: the schema of SoupBench 0.1.0 (runs, scores, samples), as it was before schema versions.

A database made before versions existed has exactly these tables and no version table;
`benchmark.schema_version` stamps it with this revision instead of running it. Written out column
by column (not from the ORM) so that later edits of the ORM cannot change what this revision was.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("method_params", sa.JSON(), nullable=False),
        sa.Column("params_key", sa.String(64), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("merge_seconds", sa.Double(), nullable=False),
        sa.Column("eval_seconds", sa.Double(), nullable=False),
        sa.Column("peak_memory_mb", sa.Double(), nullable=False),
        sa.Column("output_rank", sa.Integer(), nullable=True),
        sa.Column("consumes", sa.String(64), nullable=False),
        sa.Column("n_target_examples", sa.Integer(), nullable=True),
        sa.Column("base_fingerprint", sa.String(128), nullable=False),
        sa.Column("expert_fingerprints", sa.JSON(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("suite", "method", "params_key", "task", "seed", name="uq_runs_cell"),
        sa.CheckConstraint("status IN ('ok', 'failed')", name="ck_runs_status"),
    )
    op.create_index("ix_runs_suite", "runs", ["suite"])
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("stderr", sa.Double(), nullable=True),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("primary", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "metric", name="uq_scores_metric"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_scores_run_id", "scores", ["run_id"])
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("doc_index", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("generation", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("executed", sa.Text(), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
    )
    op.create_index("ix_samples_run_id", "samples", ["run_id"])


def downgrade() -> None:
    op.drop_table("samples")
    op.drop_table("scores")
    op.drop_table("runs")
