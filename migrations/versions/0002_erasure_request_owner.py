"""Erasure requests get an owner; Idempotency-Keys are kept only as a salted hash, unique per owner.

- ``owner``: ``api_key:<id>`` of the key that filed the request, read back from the audit log's
  ``erasure.received`` entry (its actor is ``api_key:<id>:<name>``); ``operator`` for requests filed by the
  CLI or in-process (actor of another form, or no entry).
- ``idempotency_key_hash``: HMAC-SHA256 of the raw key under the certificate salt, as
  ``core.services.erasures.idempotency_key_hash`` computes it (the salt is read from the environment here,
  ``E2U_CERTIFICATE_SALT``, with the development default as the settings have it; where the salt comes from
  elsewhere, keys filed before the upgrade simply stop matching).  The raw ``idempotency_key`` column is
  dropped: it could carry whatever a client put in it.
- Requests ``failed`` before this revision kept their data; from now on a request never ends holding data,
  so they go back to the queue (the pipeline deletes their data whatever happens to unlearning).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OPERATOR = "operator"
DEV_CERTIFICATE_SALT = "dev-only-certificate-salt-change-me"  # core.settings.DEV_CERTIFICATE_SALT, frozen


def _key_hash(salt: str, key: str) -> str:
    return hmac.new(salt.encode(), f"idempotency-key\x00{key}".encode(), hashlib.sha256).hexdigest()


def _owner_from_actor(actor: str | None) -> str:
    parts = (actor or "").split(":")
    if len(parts) >= 2 and parts[0] == "api_key" and parts[1].isdigit():
        return f"api_key:{parts[1]}"
    return OPERATOR


def upgrade() -> None:
    with op.batch_alter_table("erasure_requests") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("idempotency_key_hash", sa.String(length=64), nullable=True))

    connection = op.get_bind()
    salt = os.environ.get("E2U_CERTIFICATE_SALT") or DEV_CERTIFICATE_SALT
    actors = dict(
        connection.execute(
            sa.text(
                "SELECT subject_id, actor FROM audit_log "
                "WHERE action = 'erasure.received' AND subject_type = 'erasure_request'"
            )
        ).all()
    )
    rows = connection.execute(sa.text("SELECT id, idempotency_key FROM erasure_requests")).all()
    for request_id, raw_key in rows:
        connection.execute(
            sa.text("UPDATE erasure_requests SET owner = :owner, idempotency_key_hash = :hash WHERE id = :id"),
            {
                "owner": _owner_from_actor(actors.get(request_id)),
                "hash": None if raw_key is None else _key_hash(salt, raw_key),
                "id": request_id,
            },
        )
    now = datetime.now(UTC).replace(tzinfo=None)
    connection.execute(
        sa.text(
            "UPDATE erasure_requests SET status = 'queued', queued_at = :now, updated_at = :now, "
            "failed_at = NULL, job_id = NULL WHERE status = 'failed'"
        ),
        {"now": now},
    )

    with op.batch_alter_table("erasure_requests") as batch:
        batch.alter_column("owner", existing_type=sa.String(length=64), nullable=False)
        if connection.dialect.name != "sqlite":  # SQLite's copy drops the unnamed constraint with its column
            batch.drop_constraint("erasure_requests_idempotency_key_key", type_="unique")
        batch.drop_column("idempotency_key")
        batch.create_unique_constraint(
            "uq_erasure_requests_owner_idempotency", ["owner", "idempotency_key_hash"]
        )
        batch.create_index("ix_erasure_requests_owner_created", ["owner", "created_at"], unique=False)


def downgrade() -> None:
    # The raw keys are gone for good; the column comes back empty.
    with op.batch_alter_table("erasure_requests") as batch:
        batch.drop_index("ix_erasure_requests_owner_created")
        batch.drop_constraint("uq_erasure_requests_owner_idempotency", type_="unique")
        batch.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch.create_unique_constraint("erasure_requests_idempotency_key_key", ["idempotency_key"])
        batch.drop_column("idempotency_key_hash")
        batch.drop_column("owner")
