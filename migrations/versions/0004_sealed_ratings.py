"""Crypto-shredding: ratings and profiles sealed under per-user data keys; the suppression ledger's mark.

- ``user_data_keys``: each user's AES-256-GCM data key, wrapped under the key-encryption key (KEK), which
  lives in a file outside the database (``core.data_keys``).
- ``interactions``: ``rating``, ``timestamp``, ``label`` and ``history`` become one sealed blob
  (``sealed``); ``user_profiles``: ``age``, ``gender``, ``occupation`` likewise.  Existing rows are sealed
  here in batches, then the clear columns are dropped.  The index on (user_id, timestamp) goes with the
  clear timestamp (the unique (user_id, item_id) serves lookups by user).
- ``suppression_replay``: how far this database has applied the suppression ledger.

The KEK: the path given to ``core.db.migrate.upgrade(kek_file=)``, else ``E2U_DATA_KEK_FILE``; in
development (``E2U_ENVIRONMENT=development``) ``$E2U_HOME/keys/data-kek`` (home defaults to ``var``),
created if missing.  Needed only when there are rows to seal; without one the upgrade refuses.

Downgrade refuses: it would write every rating back in clear.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

from core.data_keys import DataKey, Keyring, SealedProfile, SealedRating

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BATCH = 5000


def _keyring() -> Keyring:
    given = context.config.attributes.get("data_kek_file") or os.environ.get("E2U_DATA_KEK_FILE")
    development = os.environ.get("E2U_ENVIRONMENT") == "development"
    if given:
        return Keyring(Path(given), create_missing=development)
    if development:
        home = Path(os.environ.get("E2U_HOME") or "var")
        return Keyring(home / "keys" / "data-kek", create_missing=True)
    raise RuntimeError(
        "migration 0004 seals the stored ratings and needs the key-encryption key: set E2U_DATA_KEK_FILE "
        "(create one with `e2u keys create-kek PATH`)"
    )


def _seal_existing(connection: sa.Connection) -> None:
    users = {
        str(u)
        for (u,) in connection.execute(
            sa.text("SELECT user_id FROM interactions UNION SELECT user_id FROM user_profiles")
        )
    }
    if not users:
        return
    ring = _keyring()
    now = datetime.now(UTC).replace(tzinfo=None)
    keys = {u: DataKey.generate() for u in sorted(users)}
    key_rows = []
    for user_id, key in keys.items():
        wrapped = ring.wrap(user_id, key)
        key_rows.append({"u": user_id, "k": wrapped.kek_id, "w": wrapped.blob, "t": now})
    connection.execute(
        sa.text("INSERT INTO user_data_keys (user_id, kek_id, wrapped_key, created_at) VALUES (:u, :k, :w, :t)"),
        key_rows,
    )
    last = -1
    while True:  # in id order, one batch at a time
        rows = connection.execute(
            sa.text(
                "SELECT id, user_id, item_id, rating, timestamp, label, history FROM interactions "
                "WHERE id > :last ORDER BY id LIMIT :n"
            ),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            break
        updates = [
            {
                "id": row_id,
                "s": SealedRating(float(r), int(t), int(label), str(h or "")).seal(keys[u], u, i),
            }
            for row_id, u, i, r, t, label, h in rows
        ]
        connection.execute(sa.text("UPDATE interactions SET sealed = :s WHERE id = :id"), updates)
        last = rows[-1][0]
    profiles = connection.execute(sa.text("SELECT user_id, age, gender, occupation FROM user_profiles")).all()
    updates = [
        {"u": u, "s": SealedProfile(str(a or ""), str(g or ""), str(o or "")).seal(keys[u], u)}
        for u, a, g, o in profiles
    ]
    if updates:
        connection.execute(sa.text("UPDATE user_profiles SET sealed = :s WHERE user_id = :u"), updates)


def upgrade() -> None:
    op.create_table(
        "user_data_keys",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("kek_id", sa.String(length=16), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.create_index("ix_user_data_keys_kek", "user_data_keys", ["kek_id"], unique=False)
    op.create_table(
        "suppression_replay",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("user_profiles") as batch:
        batch.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=True))

    _seal_existing(op.get_bind())

    with op.batch_alter_table("interactions") as batch:
        batch.drop_index("ix_interactions_user_time")
        for column in ("rating", "timestamp", "label", "history"):
            batch.drop_column(column)
        batch.alter_column("sealed", existing_type=sa.LargeBinary(), nullable=False)
    with op.batch_alter_table("user_profiles") as batch:
        for column in ("age", "gender", "occupation"):
            batch.drop_column(column)
        batch.alter_column("sealed", existing_type=sa.LargeBinary(), nullable=False)


def downgrade() -> None:
    raise RuntimeError("0004 cannot be downgraded: it would write every stored rating back in clear")
