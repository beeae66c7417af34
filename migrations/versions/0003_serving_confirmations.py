"""Serving processes confirm which adapter version they serve (``serving_confirmations``): the API's
watcher writes one row per (process, version) when it switches and renews ``seen_at`` while it serves it;
the pipeline waits for every live process to confirm a promotion before the old weights are destroyed, and
the certificate records when each did.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving_confirmations",
        sa.Column("process_id", sa.String(length=200), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("process_id", "version_id"),
    )
    op.create_index("ix_serving_confirmations_seen", "serving_confirmations", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_serving_confirmations_seen", table_name="serving_confirmations")
    op.drop_table("serving_confirmations")
