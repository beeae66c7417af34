"""Item popularity: how many stored ratings each item has, kept by the database itself.

``popular_unseen_items`` (the candidates of a recommendation without a candidate list) counted every
rating of every item per request: a scan of the whole ``interactions`` table, which grows with the
catalogue.  ``item_popularity`` holds the count per item, indexed by (ratings, item_id), so a
request reads the head of that index; triggers on ``interactions`` keep it exact on every insert, delete
and item change, whichever code path writes (import, new ratings, erasure).  The rows under a live erasure
are subtracted at read time (few: the open requests' users).

- ``item_popularity``: filled from the ratings stored now.
- SQLite: one row-level trigger per event; PostgreSQL: statement-level triggers over transition tables
  (one grouped upsert per statement, not one per row: a bulk import stays a bulk write).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

EVENTS = ("insert", "delete", "update")

# PostgreSQL: the upsert of the added counts is ordered by item so that concurrent writers take the rows'
# locks in one order (no deadlock between two imports touching the same items)
_PG_ADD = (
    "INSERT INTO item_popularity (item_id, ratings) "
    "SELECT item_id, count(*) FROM {table} GROUP BY item_id ORDER BY item_id "
    "ON CONFLICT (item_id) DO UPDATE SET ratings = item_popularity.ratings + excluded.ratings"
)
_PG_REMOVE = (
    "UPDATE item_popularity p SET ratings = p.ratings - gone.n "
    "FROM (SELECT item_id, count(*) AS n FROM {table} GROUP BY item_id ORDER BY item_id) gone "
    "WHERE p.item_id = gone.item_id"
)
_PG_BODY = {
    "insert": _PG_ADD.format(table="added") + ";",
    "delete": _PG_REMOVE.format(table="removed") + ";",
    "update": _PG_REMOVE.format(table="removed") + "; " + _PG_ADD.format(table="added") + ";",
}
_PG_REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS added",
    "delete": "REFERENCING OLD TABLE AS removed",
    "update": "REFERENCING OLD TABLE AS removed NEW TABLE AS added",
}

_SQLITE_ADD = (
    "INSERT OR IGNORE INTO item_popularity (item_id, ratings) VALUES (NEW.item_id, 0); "
    "UPDATE item_popularity SET ratings = ratings + 1 WHERE item_id = NEW.item_id;"
)
_SQLITE_REMOVE = "UPDATE item_popularity SET ratings = ratings - 1 WHERE item_id = OLD.item_id;"
_SQLITE_TRIGGERS = {
    "insert": f"AFTER INSERT ON interactions BEGIN {_SQLITE_ADD} END",
    "delete": f"AFTER DELETE ON interactions BEGIN {_SQLITE_REMOVE} END",
    "update": (
        "AFTER UPDATE OF item_id ON interactions WHEN OLD.item_id <> NEW.item_id "
        f"BEGIN {_SQLITE_REMOVE} {_SQLITE_ADD} END"
    ),
}


def upgrade() -> None:
    op.create_table(
        "item_popularity",
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("ratings", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("item_id"),
    )
    # ascending: read backwards for the most rated first (both databases; a DESC column would not
    # round-trip through SQLite's reflection, which the models-match-migrations test relies on)
    op.create_index("ix_item_popularity_rank", "item_popularity", ["ratings", "item_id"], unique=False)
    op.execute(
        "INSERT INTO item_popularity (item_id, ratings) "
        "SELECT item_id, count(*) FROM interactions GROUP BY item_id"
    )
    dialect = op.get_bind().dialect.name
    for event in EVENTS:
        if dialect == "sqlite":
            op.execute(f"CREATE TRIGGER interactions_popularity_{event} {_SQLITE_TRIGGERS[event]}")
        elif dialect == "postgresql":
            op.execute(
                f"CREATE FUNCTION interactions_popularity_{event}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {_PG_BODY[event]} RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER interactions_popularity_{event} AFTER {event.upper()} ON interactions "
                f"{_PG_REFERENCING[event]} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION interactions_popularity_{event}()"
            )


def downgrade() -> None:
    names = [f"interactions_popularity_{event}" for event in EVENTS]
    if op.get_bind().dialect.name == "postgresql":
        statements = [
            f"DROP TRIGGER IF EXISTS {n} ON interactions; DROP FUNCTION IF EXISTS {n}()" for n in names
        ]
    else:
        statements = [f"DROP TRIGGER IF EXISTS {n}" for n in names]
    for statement in statements:
        op.execute(statement)
    op.drop_index("ix_item_popularity_rank", table_name="item_popularity")
    op.drop_table("item_popularity")
