"""Operations: API keys expire; the verdict class of each job, the time each job spent in each phase
(both read by /metrics); the webhook outbox and its delivery records; the audit log indexed by time (its
export reads time ranges).

- ``api_keys.expires_at``: NULL (never) for every key made before.
- ``unlearning_jobs.verdict_class``: filled from the job's stored figures (``metrics.verdict``) where
  they hold one, ``not_needed`` for jobs whose verdict is ``not_needed``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("unlearning_jobs") as batch:
        batch.add_column(sa.Column("verdict_class", sa.String(length=32), nullable=True))
    connection = op.get_bind()
    jobs = connection.execute(
        sa.text("SELECT id, verdict, metrics FROM unlearning_jobs WHERE verdict IS NOT NULL")
    ).all()
    for job_id, verdict, metrics in jobs:
        figures = json.loads(metrics) if isinstance(metrics, str) else (metrics or {})
        verdict_class = "not_needed" if verdict == "not_needed" else figures.get("verdict")
        if isinstance(verdict_class, str):
            connection.execute(
                sa.text("UPDATE unlearning_jobs SET verdict_class = :v WHERE id = :id"),
                {"v": verdict_class[:32], "id": job_id},
            )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    op.create_table(
        "job_phase_timings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["unlearning_jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_phase_timings_phase", "job_phase_timings", ["phase"], unique=False)
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "event_type", name="uq_webhook_deliveries_event"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_job_phase_timings_phase", table_name="job_phase_timings")
    op.drop_table("job_phase_timings")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    with op.batch_alter_table("unlearning_jobs") as batch:
        batch.drop_column("verdict_class")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
