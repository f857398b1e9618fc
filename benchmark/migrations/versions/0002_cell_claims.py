"""Cell claims: which runner is computing which cell, so that runners sharing a database cooperate.

See `benchmark.claims` for how claims are taken, kept alive and taken over.

Revision ID: 0002_cell_claims
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_cell_claims"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cell_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("params_key", sa.String(64), nullable=False),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("process_space", sa.String(64), nullable=False),
        sa.Column("process_started", sa.Double(), nullable=False),
        sa.Column("claimed_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("suite", "method", "params_key", "task", "seed", name="uq_claims_cell"),
    )
    op.create_index("ix_cell_claims_owner", "cell_claims", ["owner"])


def downgrade() -> None:
    op.drop_table("cell_claims")
